"""The profiler: sizes and measured shares per cut; the recommendation's cost model."""

from __future__ import annotations

from pathlib import Path

import pytest

from jetsplit.calibration.graph import candidate_cuts, load_graph
from jetsplit.calibration.profile import Link, Measurement, choose, format_table, profile_model
from jetsplit.errors import ConfigError

# Synthetic head times (ms) for the chain's cuts, full model 10 ms: the policy is
# tested on numbers chosen to make each answer unambiguous, not on noisy timings.
_EDGE_MS = {
    "c0": 1.0,
    "r0": 1.5,
    "c1": 2.0,
    "r1": 2.5,
    "c2": 3.0,
    "r2": 3.5,
    "pool": 5.0,
    "flat": 5.0,
}


@pytest.mark.parametrize(
    ("bandwidth_mbps", "speedup", "expected", "rtt_ms"),
    [
        (1e6, 100.0, "(all on cloud)", 0.0),  # free link, fast cloud: send the input
        (0.001, 10.0, "(all on edge)", 0.0),  # 1 kbit/s: even 64 bytes cost 512 ms
        (1.0, 10.0, "pool", 0.0),  # 64 bytes after half the work beat both ends
        # A free link but far away (issue 11): the round trip alone outweighs the
        # whole model on the edge, whatever the cloud's speed.
        (1e6, 100.0, "(all on edge)", 12.0),
        (1e6, 100.0, "(all on cloud)", 9.0),
    ],
)
def test_recommendation(
    chain_model: Path, bandwidth_mbps: float, speedup: float, expected: str, rtt_ms: float
) -> None:
    graph = load_graph(chain_model)
    cuts = candidate_cuts(graph)
    timing = Measurement(10.0, {(name,): ms for name, ms in _EDGE_MS.items()}, runs=1)
    options = choose(graph, cuts, timing, Link(bandwidth_mbps, speedup, rtt_ms=rtt_ms))
    assert [o.kind for o in options] == ["cloud"] + ["cut"] * len(cuts) + ["edge"]
    best = min(options, key=lambda o: o.total_ms)
    assert best.label == expected


def test_cost_terms(chain_model: Path) -> None:
    graph = load_graph(chain_model)
    timing = Measurement(10.0, {(name,): ms for name, ms in _EDGE_MS.items()}, runs=1)
    options = {
        o.label: o for o in choose(graph, candidate_cuts(graph), timing, Link(8.0, 4.0, "f16"))
    }
    r1 = options["r1"]
    assert r1.send_bytes == 2 * 4096  # f16 on the wire
    assert r1.send_ms == pytest.approx(2 * 4096 * 8 / 8e6 * 1e3)
    assert r1.cloud_ms == pytest.approx((10.0 - 2.5) / 4.0)
    assert r1.total_ms == pytest.approx(2.5 + r1.send_ms + r1.cloud_ms)
    assert r1.share == pytest.approx(0.25)
    cloud = options["(all on cloud)"]
    assert cloud.send_bytes == 3 * 32 * 32  # 8-bit pixels
    assert cloud.total_ms == pytest.approx(cloud.send_ms + 10.0 / 4.0)
    assert options["(all on edge)"].total_ms == 10.0
    far = {o.label: o for o in choose(graph, candidate_cuts(graph), timing, Link(8.0, 4.0, "f16", rtt_ms=40.0))}
    assert far["r1"].send_ms == pytest.approx(r1.send_ms + 40.0)  # every sender pays the round trip
    assert far["(all on edge)"].total_ms == 10.0  # what sends nothing does not


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"bandwidth_mbps": 0.0}, "bandwidth"),
        ({"cloud_speedup": -1.0}, "cloud speedup"),
        ({"wire": "int4"}, "wire encoding"),
        ({"rtt_ms": -1.0}, "--rtt-ms: expected a round-trip time >= 0 ms, got -1.0"),
    ],
)
def test_bad_link(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Link(**kwargs)  # type: ignore[arg-type]


def test_profile_measures_every_cut(residual_model: Path) -> None:
    profile = profile_model(residual_model, runs=5, extra_cuts=[["b1_relu1", "b0_out"]])
    labels = [o.label for o in profile.options]
    assert labels[0] == "(all on cloud)" and labels[-1] == "(all on edge)"
    assert "b1_relu1,b0_out" in labels and "b1_out" in labels and "b1_relu1" not in labels
    assert profile.full_ms > 0
    cuts = [o for o in profile.options if o.kind == "cut"]
    assert all(o.edge_ms > 0 for o in cuts)
    assert all(o.bytes["fp32"] == 4 * o.elements for o in cuts if o.elements)
    # Heads before the second block are clearly cheaper than the whole model.
    assert {o.label: o for o in cuts}["b0_out"].share < 0.9
    assert profile.recommended in profile.options
    table = format_table(profile)
    assert "recommended:" in table and "b1_relu1,b0_out" in table
    data = profile.to_json()
    assert data["recommended"]["label"] == profile.recommended.label
    assert len(data["options"]) == len(profile.options)
