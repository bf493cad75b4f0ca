"""The demo bundles on the held-out MNIST test split: the figures issue 2 asks for.

These are real models and real data, so the assertions are on accuracy and work,
which are deterministic; time is measured in benchmarks, not here.
"""

from __future__ import annotations

import json

import pytest

from jetsplit.bundle import load_bundle
from jetsplit.cli.eval import evaluate
from jetsplit.demo import ZOO_DIR


@pytest.fixture(scope="module")
def zoo() -> dict:
    return json.loads((ZOO_DIR / "zoo.json").read_text())["models"]


def test_zoo_shape(zoo: dict) -> None:
    assert zoo["big"]["flops"] >= 20 * zoo["little"]["flops"]
    assert sum(p.stat().st_size for p in ZOO_DIR.glob("*.onnx")) <= 10 * 2**20
    assert {f"ens{i}" for i in range(4)} <= set(zoo)


def test_little_big_reaches_big_with_little_offload() -> None:
    r = evaluate("demo:little-big", "mnist", "test", batch_size=250)
    big_alone = r["stages"][1]["accuracy_alone"]
    assert r["accuracy"] >= big_alone - 0.002 - 1e-9, r
    assert r["offload_fraction"] <= 0.15, r


def test_ensemble_spends_at_most_60_percent() -> None:
    r = evaluate("demo:ensemble", "mnist", "test", batch_size=250)
    assert r["mean_flops"] <= 0.60 * r["flops_full"], r
    assert r["accuracy"] >= r["accuracy_full"] - 0.001 - 1e-9, r


def test_split_carries_block2_activation() -> None:
    bundle = load_bundle("demo:split")
    head, tail = bundle.stages
    assert head.where == "edge" and head.carry == "act" and tail.input == "carry" and tail.where == "cloud"
    r = evaluate("demo:split", "mnist", "test", batch_size=250)
    assert r["accuracy"] >= r["accuracy_full"] - 0.002 - 1e-9, r
