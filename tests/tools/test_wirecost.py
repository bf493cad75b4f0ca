"""Activation encodings on real activations: bytes through the real codec, and the
score error the decoded tensor causes in the real tail."""

from __future__ import annotations

import numpy as np

from jetsplit.bundle import load_bundle
from jetsplit.chain import Chain
from jetsplit.datasets import load_dataset
from jetsplit.tools.bench import activation_costs
from jetsplit.tools.wirecost import encoding_costs


def test_encodings_of_the_demo_split_on_real_digits() -> None:
    data = load_dataset("mnist", "test")
    with Chain.open(load_bundle("demo:split")) as chain:
        costs, samples = activation_costs(chain, [data.images[i] for i in range(64)])
    by = {c.encoding: c for c in costs}
    assert samples == 64 and list(by) == ["raw", "f16", "i8", "i8+lz4", "i8+zstd"]
    assert by["raw"].max_abs_prob_err == 0 and by["raw"].ratio == 1
    assert by["f16"].bytes * 2 == by["raw"].bytes and by["i8"].bytes * 4 == by["raw"].bytes
    # Post-ReLU activations are mostly zeros: entropy coding takes a good part more.
    assert by["i8+zstd"].bytes < 0.8 * by["i8"].bytes and by["i8+lz4"].bytes < by["i8"].bytes
    assert 0 < by["f16"].max_abs_prob_err < by["i8"].max_abs_prob_err < 0.05
    assert by["i8+zstd"].max_abs_prob_err == by["i8"].max_abs_prob_err  # lossless on top of i8
    assert all(c.top1_agree >= 0.95 for c in costs)


def test_without_a_tail_only_bytes() -> None:
    carry = np.maximum(np.random.default_rng(0).normal(size=(4, 8, 5, 5)), 0).astype(np.float32)
    costs = encoding_costs(carry)
    assert [c.bytes for c in costs][:3] == [800.0, 400.0, 200.0]
    assert all(np.isnan(c.max_abs_prob_err) for c in costs)
