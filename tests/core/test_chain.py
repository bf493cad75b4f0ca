"""The chain: offline (run_all + trace) and online (run_from) agree sample by sample."""

from __future__ import annotations

import numpy as np
import pytest

from jetsplit.chain import Chain
from jetsplit.datasets import load_dataset
from jetsplit.errors import DataError
from jetsplit.trace import collect_trace


@pytest.mark.parametrize("mode", ["little-big", "split", "ensemble"])
def test_online_equals_offline(make_bundle, mode: str) -> None:
    bundle = make_bundle(mode)
    data = load_dataset("digits", "test")
    with Chain.open(bundle) as chain:
        trace = collect_trace(chain, data.images, data.labels, batch_size=64)
        stats = trace.cascade()
        # Online, the edge runs its prefix; the rest resumes from the carried state
        # as the cloud would, in a batch of whatever is pending.
        x = chain.preprocess(data.images)
        edge = chain.run_from(0, x, stop_at=chain.first_cloud)
        pending = np.flatnonzero(~edge.accepted)
        assert edge.next_stage == chain.first_cloud or pending.size == 0
        final_stage = edge.stage.copy()
        final_pred = edge.pred.copy()
        if pending.size:
            carry = edge.carry[pending] if edge.carry is not None else None
            cloud = chain.run_from(edge.next_stage, x[pending], carry=carry, state=edge.state.take(pending))
            assert cloud.accepted.all()
            final_stage[pending] = cloud.stage
            final_pred[pending] = cloud.pred
    np.testing.assert_array_equal(final_stage, stats.exit_stage)
    rows = np.arange(trace.n)
    np.testing.assert_array_equal(final_pred, trace.pred[rows, stats.exit_stage])
    # The gate really splits the set: some exit early, some go on.
    assert 0.0 < stats.exit_fraction[0] < 1.0


def test_single_frame_step_matches_batch(make_bundle) -> None:
    bundle = make_bundle("little-big")
    data = load_dataset("digits", "test")
    with Chain.open(bundle) as chain:
        batch = chain.run_from(0, chain.preprocess(data.images[:40]), stop_at=1)
        for i in range(40):
            one = chain.run_from(0, chain.preprocess([data.images[i]]), stop_at=1)
            assert one.accepted[0] == batch.accepted[i]
            assert one.pred[0] == batch.pred[i]


def test_average_combine_is_mean_of_softmax(make_bundle) -> None:
    bundle = make_bundle("ensemble")
    data = load_dataset("digits", "test")
    with Chain.open(bundle) as chain:
        outs = chain.run_all(chain.preprocess(data.images[:16]))
    mean = (outs[0].own_probs + outs[1].own_probs + outs[2].own_probs) / 3
    np.testing.assert_allclose(outs[2].probs, mean, atol=1e-6)


def test_thresholds_override(make_bundle) -> None:
    bundle = make_bundle("little-big")
    data = load_dataset("digits", "test")
    with Chain.open(bundle) as chain:
        x = chain.preprocess(data.images)
        never = chain.run_from(0, x, stop_at=1, thresholds=[float("inf"), None])
        always = chain.run_from(0, x, stop_at=1, thresholds=[0.0, None])
    assert not never.accepted.any() and never.next_stage == 1
    assert always.accepted.all() and always.next_stage is None


def test_missing_carry_is_a_clear_error(make_bundle) -> None:
    bundle = make_bundle("split")
    with Chain.open(bundle) as chain, pytest.raises(DataError, match="carried tensor"):
        chain.run_from(1, np.zeros((2, 1, 8, 8), np.float32))


def test_open_only_one_side(make_bundle) -> None:
    bundle = make_bundle("split")
    with Chain.open(bundle, where="cloud") as chain:
        assert chain.stages[0] is None and chain.stages[1] is not None
        res = chain.run_from(1, np.zeros((0,), np.float32), carry=np.ones((3, 32), np.float32))
        assert res.accepted.all() and res.stage.tolist() == [1, 1, 1]


def test_handoff_takes_float16_carries_and_widens_the_batch(make_bundle) -> None:
    """The cloud worker keeps f16 activations as received: validate accepts them for
    a float32 input and stack widens the stacked batch, exactly as one by one."""
    from jetsplit.handoff import CARRY, stack, validate

    bundle = make_bundle("split")
    stage = bundle.first_cloud_stage()
    with Chain.open(bundle, where="cloud") as chain:
        st = chain.stage(stage)
        shape = st.engine.input_spec(st.input_name).shape[1:]
        rng = np.random.default_rng(1)
        halves = [rng.standard_normal((1, *shape)).astype(np.float16) for _ in range(5)]
        for h in halves:
            validate(chain, stage, {CARRY: h})
        resume = stack(chain, stage, [{CARRY: h} for h in halves])
        assert resume.carry is not None and resume.carry.dtype == np.float32
        np.testing.assert_array_equal(resume.carry, np.concatenate(halves).astype(np.float32))
        with pytest.raises(DataError, match="carry"):
            validate(chain, stage, {CARRY: halves[0].astype(np.int32)})
