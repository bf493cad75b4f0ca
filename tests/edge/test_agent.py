"""The edge agent against a real worker on real sockets: one result per frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jetsplit.edge.agent import EdgeAgent
from jetsplit.edge.config import EdgeConfig
from jetsplit.edge.sinks import QueueSink
from tests.support.frames import digits_folder


@pytest.fixture
def worker_at(worker_thread: Any) -> Any:
    """worker_at(bundle) -> the endpoint of a real worker serving it."""
    return lambda bundle: worker_thread(bundle).endpoints[0]


def _run(config: EdgeConfig) -> tuple[list, EdgeAgent]:
    agent = EdgeAgent(config, sinks=QueueSink())
    try:
        results = list(agent.results())
    finally:
        agent.close()
    return results, agent


@pytest.mark.parametrize("mode", ["split", "ensemble"])
def test_every_frame_one_result_with_cloud(make_bundle, worker_at, tmp_path: Path, mode: str) -> None:
    bundle = make_bundle(mode)
    endpoint = worker_at(bundle)
    src = digits_folder(tmp_path / "digits", 120)
    # The ensemble's cloud members take the frame: frames must be allowed to leave.
    offload = "frames" if mode == "ensemble" else "activations"
    results, agent = _run(EdgeConfig(bundle=str(bundle.root), source=str(src), cloud=(endpoint,),
                                     deadline_ms=2000, sinks=(), offload=offload))
    frames = sorted(r.frame for r in results)
    assert frames == list(range(120))
    wheres = {r.where for r in results}
    assert "edge" in wheres and "cloud" in wheres and "fallback" not in wheres
    assert all(r.truth is not None for r in results)
    cloud = [r for r in results if r.where == "cloud"]
    assert all(r.bytes_up > 0 for r in cloud)
    assert agent.stats.offloaded == len(cloud)


def test_no_cloud_is_fallback_not_loss(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    src = digits_folder(tmp_path / "digits", 60)
    # Nothing listens here: every unsure frame falls back, none is lost, none waits.
    results, agent = _run(EdgeConfig(bundle=str(bundle.root), source=str(src),
                                     cloud=(f"ipc://{tmp_path}/nobody.sock",), deadline_ms=300, sinks=()))
    assert sorted(r.frame for r in results) == list(range(60))
    assert {r.where for r in results} <= {"edge", "fallback"}
    assert any(r.where == "fallback" for r in results)


def test_privacy_switch_keeps_frames_on_board(make_bundle, worker_at, tmp_path: Path) -> None:
    bundle = make_bundle("little-big")  # its cloud stage needs the frame
    endpoint = worker_at(bundle)
    src = digits_folder(tmp_path / "digits", 40)
    results, agent = _run(EdgeConfig(bundle=str(bundle.root), source=str(src), cloud=(endpoint,),
                                     offload="activations", sinks=()))
    assert agent.offload_block is not None and "needs the frame" in agent.offload_block
    assert agent.stats.offloaded == 0 and all(r.bytes_up == 0 for r in results)
    results, agent = _run(EdgeConfig(bundle=str(bundle.root), source=str(src), cloud=(endpoint,),
                                     offload="frames", deadline_ms=2000, sinks=()))
    assert agent.stats.offloaded > 0 and any(r.where == "cloud" for r in results)


def test_other_bundle_on_worker_runs_local_and_says_so_once(make_bundle, worker_at, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    served = make_bundle("split", name="served")
    mine = make_bundle("split", edit=lambda m: m["stage"][0]["gate"].update(threshold=0.55), name="mine")
    endpoint = worker_at(served)
    src = digits_folder(tmp_path / "digits", 80)
    with caplog.at_level("ERROR", logger="jetsplit.edge"):
        results, agent = _run(EdgeConfig(bundle=str(mine.root), source=str(src), cloud=(endpoint,),
                                         deadline_ms=2000, sinks=()))
    assert sorted(r.frame for r in results) == list(range(80))
    assert not any(r.where == "cloud" for r in results)
    said = [rec for rec in caplog.records if "does not serve this bundle" in rec.getMessage()]
    assert len(said) == 1


def test_jpeg_frames_with_compressed_activations(make_bundle, worker_at, tmp_path: Path) -> None:
    """[wire] frame = "jpeg" with compression = "lz4": the activations go lz4, the
    JPEG goes as it is (the protocol refuses jpeg+lz4), and every frame is answered."""

    def jpeg_lz4(manifest: dict[str, Any]) -> None:
        manifest["wire"] = {"activation": "f16", "frame": "jpeg", "compression": "lz4"}

    bundle = make_bundle("ensemble", edit=jpeg_lz4)
    endpoint = worker_at(bundle)
    src = digits_folder(tmp_path / "digits", 40)
    results, agent = _run(EdgeConfig(bundle=str(bundle.root), source=str(src), cloud=(endpoint,),
                                     deadline_ms=2000, sinks=(), offload="frames"))
    assert sorted(r.frame for r in results) == list(range(40))
    cloud = [r for r in results if r.where == "cloud"]
    assert cloud and "fallback" not in {r.where for r in results}
