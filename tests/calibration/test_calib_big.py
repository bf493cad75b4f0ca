"""The demo zoo's big model, when it has been built: profile it, split after block 2."""

from __future__ import annotations

from pathlib import Path

import pytest

import jetsplit.demo
from jetsplit.calibration.graph import ModelGraph, candidate_cuts, load_graph
from jetsplit.calibration.profile import Link, profile_model
from jetsplit.calibration.split import real_inputs, split_model, verify_split

BIG = Path(jetsplit.demo.__file__).resolve().parent / "zoo" / "big.onnx"

pytestmark = pytest.mark.skipif(
    not BIG.is_file(), reason=f"{BIG} not built (make zoo)"
)


def _block_outputs(graph: ModelGraph) -> list[str]:
    """Candidate cuts that end a residual block: an Add's output, or the Relu right after it."""
    ends: list[str] = []
    for cut in candidate_cuts(graph):
        node = graph.nodes[cut.position]
        feeds_from_add = (
            node.op_type == "Relu" and graph.nodes[graph.producer[node.input[0]]].op_type == "Add"
        )
        if feeds_from_add and ends and graph.nodes[graph.producer[ends[-1]]].op_type == "Add":
            ends[-1] = cut.tensor  # prefer the Relu: it is what the next block reads
        elif node.op_type == "Add" or feeds_from_add:
            ends.append(cut.tensor)
    return ends


def test_profile_big() -> None:
    profile = profile_model(BIG, real_inputs(BIG, data="mnist", count=1), Link(20.0, 8.0), runs=5)
    cuts = [o for o in profile.options if o.kind == "cut"]
    assert len(cuts) >= 3
    assert profile.full_ms > 0


def test_split_big_after_block2(tmp_path: Path) -> None:
    graph = load_graph(BIG)
    ends = _block_outputs(graph)
    assert len(ends) >= 2, f"expected residual blocks in {BIG.name}, found ends {ends}"
    if any("/block" in name for name in ends):  # torch's exporter names tensors by module
        assert ends[1].startswith("/block2/"), ends
    result = split_model(BIG, [ends[1]], tmp_path)
    check = verify_split(BIG, result, real_inputs(BIG, data="mnist", count=8))
    assert check.max_abs_diff <= 1e-4
