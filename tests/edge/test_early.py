"""Early offload: a frame sent from the first edge gate, skipping the next edge stage."""

from __future__ import annotations

from typing import Any

import numpy as np

from jetsplit.chain import Chain
from jetsplit.datasets import load_dataset
from jetsplit.edge.early import EarlyOffload, early_gate
from jetsplit.handoff import pack, validate


def _two_edge_members(m: dict[str, Any]) -> None:
    m["stage"][1]["where"] = "edge"


def test_which_bundles_can_offload_early(make_bundle: Any) -> None:
    assert early_gate(make_bundle("ensemble", _two_edge_members, name="e2")) == (0, "after 'm0', skipping m1")
    gate, why = early_gate(make_bundle("split"))
    assert gate is None and "one edge stage" in why
    assert EarlyOffload.for_bundle(make_bundle("little-big", name="lb")) is None


def test_early_offload_sends_the_least_sure_and_the_cloud_accepts_it(make_bundle: Any) -> None:
    bundle = make_bundle("ensemble", _two_edge_members, name="e2")
    early = EarlyOffload.for_bundle(bundle)
    assert early is not None
    frames = load_dataset("digits", "test").images[:200]
    thresholds = bundle.thresholds()
    with Chain.open(bundle, where="edge") as edge, Chain.open(bundle, where="cloud") as cloud:
        # Fraction 0: the calibrated chain, frame for frame.
        for frame in frames[:50]:
            x = edge.preprocess([frame])
            res, rows = early.run(edge, x, thresholds)
            sent = bool(rows[0])
            ref = edge.run_from(0, x, stop_at=2, thresholds=thresholds)
            assert not sent and (res.stage[0], res.accepted[0], res.pred[0]) == (ref.stage[0], ref.accepted[0], ref.pred[0])
        early.fraction = 0.5
        sent_scores, kept_scores = [], []
        for frame in frames:
            x = edge.preprocess([frame])
            head = edge.run_from(0, x, stop_at=1, thresholds=thresholds)
            res, rows = early.run(edge, x, thresholds)
            sent = bool(rows[0])
            if head.accepted[0]:
                assert not sent
                continue
            (sent_scores if sent else kept_scores).append(float(head.score[0]))
            if sent:
                assert res.next_stage == 2 and res.stage[0] == 0 and res.state is not None and res.state.count == 2
                tensors = pack(bundle, 2, frame, res.carry, res.state)
                validate(cloud, 2, tensors)  # what the worker checks: it accepts the request
    # About half of the frames the first gate was unsure of went early: the least sure ones.
    total = len(sent_scores) + len(kept_scores)
    assert 0.3 * total <= len(sent_scores) <= 0.7 * total
    assert np.median(sent_scores) < np.median(kept_scores)


def test_a_batch_keeps_its_rows_apart(make_bundle: Any) -> None:
    bundle = make_bundle("ensemble", _two_edge_members, name="e2")
    early = EarlyOffload.for_bundle(bundle)
    assert early is not None
    frames = load_dataset("digits", "test").images[:64]
    thresholds = bundle.thresholds()
    with Chain.open(bundle, where="edge") as edge:
        x = edge.preprocess(list(frames))
        ref = edge.run_from(0, x, stop_at=2, thresholds=thresholds)
        res, rows = early.run(edge, x, thresholds)  # fraction 0: the chain's own batch result
        assert not rows.any() and np.array_equal(res.stage, ref.stage) and np.array_equal(res.pred, ref.pred)
        early.fraction = 1.0  # every frame the first gate is unsure of goes from there
        res, rows = early.run(edge, x, thresholds)
        head = edge.run_from(0, x, stop_at=1, thresholds=thresholds)
        assert np.array_equal(rows, ~head.accepted) and np.all(res.stage[rows] == 0)
        assert res.next_stage == 2 and res.state is not None and res.state.count == 2
        assert np.allclose(res.probs[rows], head.probs[rows])
