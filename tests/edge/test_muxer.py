"""The muxer and its feeds on real sources (image folders, a video, an HTTP MJPEG
camera served by a real process), and the fair-share arithmetic."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest

from jetsplit.edge.config import load_edge_config
from jetsplit.edge.fairness import FairShare, water_level
from jetsplit.edge.frame import Frame
from jetsplit.edge.muxer import Muxer
from jetsplit.edge.sources import Source, is_live, open_source
from jetsplit.edge.streams import SourceSpec
from jetsplit.errors import ConfigError, SourceError
from tests.support.camera import start_camera
from tests.support.frames import digits_folder


def _open(spec: SourceSpec) -> Source:
    return open_source(spec.uri, realtime=bool(spec.realtime), fps=spec.fps, source_id=spec.source_id,
                       stall_timeout_s=1.0)


def _drain(mux: Muxer, timeout: float = 30.0) -> list[list[Frame]]:
    batches = []
    end = time.monotonic() + timeout
    while not mux.finished:
        assert time.monotonic() < end, "the muxer never finished"
        batch = mux.next_batch(0.05)[0]
        if batch:
            batches.append(batch)
    return batches


def test_batches_take_one_frame_per_source_and_every_file_frame(tmp_path: Path) -> None:
    lengths = [30, 12, 5]
    specs = [SourceSpec(str(digits_folder(tmp_path / f"f{i}", n)), name=f"f{i}") for i, n in enumerate(lengths)]
    mux = Muxer(specs, _open, is_live, max_batch=8, max_wait_ms=50.0).start()
    try:
        # Feeds open on their own threads: once each has its first frame, the
        # batch holds all three (not only when the threads happen to start in time).
        _wait_for(lambda: all(f.ready for f in mux.feeds))
        batches = _drain(mux)
    finally:
        mux.stop()
    for batch in batches:
        assert len({f.source_id for f in batch}) == len(batch)  # one frame per source
    frames = [f for b in batches for f in b]
    for i, n in enumerate(lengths):
        assert [f.index for f in frames if f.source_id == f"f{i}"] == list(range(n))
    # While all three run, the batch holds all three (read on demand, all ready).
    assert max(len(b) for b in batches) == 3
    assert all(f.stale == 0 and f.error is None for f in mux.feeds)


def test_round_robin_when_more_sources_than_max_batch(tmp_path: Path) -> None:
    specs = [SourceSpec(str(digits_folder(tmp_path / f"f{i}", 10)), name=f"f{i}") for i in range(3)]
    mux = Muxer(specs, _open, is_live, max_batch=2, max_wait_ms=50.0).start()
    batches = []
    try:
        for _ in range(6):
            _wait_for(lambda: all(f.ready for f in mux.feeds))  # all three have a frame
            batches.append([f.source_id for f in mux.next_batch(1.0)[0]])
    finally:
        mux.stop()
    # Two of three each time, each batch starting after the last one's first source:
    # none is left out while the others fill every batch.
    assert batches == [["f0", "f1"], ["f1", "f2"], ["f2", "f0"]] * 2


def test_a_broken_source_is_logged_once_and_the_others_go_on(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = SourceSpec(str(digits_folder(tmp_path / "good", 20)), name="good")
    missing = SourceSpec(str(tmp_path / "nowhere"), name="missing")
    # A live camera that is not there: retried with backoff, quietly after the first line.
    camera = SourceSpec("http://127.0.0.1:9/video.mjpg", name="camera")
    caplog.set_level(logging.DEBUG, logger="jetsplit.edge.sources")
    mux = Muxer([good, missing, camera], _open, is_live, max_batch=8, max_wait_ms=20.0, backoff_s=0.05).start()
    try:
        frames: list[Frame] = []
        end = time.monotonic() + 30
        while len(frames) < 20:
            assert time.monotonic() < end
            frames += mux.next_batch(0.05)[0]
        feeds = {f.source_id: f for f in mux.feeds}
        _wait_for(lambda: feeds["camera"].failures >= 3)
        assert not mux.finished  # the camera is still being retried
    finally:
        mux.stop()
    assert [f.index for f in frames] == list(range(20))
    assert feeds["missing"].ended and feeds["missing"].opens == 0 and "no such" in (feeds["missing"].error or "")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert sum("camera" in r.getMessage() for r in warnings) == 1
    assert sum("missing" in r.getMessage() for r in warnings) == 1


def _wait_for(cond, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "condition never held"
        time.sleep(0.01)  # polling counters another thread updates


def test_live_camera_comes_back_and_numbers_go_on(tmp_path: Path) -> None:
    server, port = start_camera()
    spec = SourceSpec(f"http://127.0.0.1:{port}/video.mjpg", name="door")
    mux = Muxer([spec], _open, is_live, max_batch=4, max_wait_ms=5.0, backoff_s=0.05, max_backoff_s=0.2).start()
    feed = mux.feeds[0]
    seen: list[int] = []
    try:
        _collect(mux, seen, lambda: len(seen) >= 10)
        server.kill()  # the camera goes away...
        server.wait(10)
        _wait_for(lambda: feed.failures >= 2)  # (the stall, then a refused reopening)
        assert not mux.finished
        # ...and comes back on its address: the feed reopens it and goes on.
        server, _ = start_camera(port)
        _collect(mux, seen, lambda: feed.opens >= 2 and len(seen) >= 20)
    finally:
        mux.stop()
        server.kill()
        server.wait(10)
    assert seen == sorted(set(seen))  # never a frame number twice, even across the reopening
    assert feed.error is None  # recovered


def _collect(mux: Muxer, seen: list[int], done) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + 30
    while not done():
        assert time.monotonic() < end, "the camera delivered too little"
        seen += [f.index for f in mux.next_batch(0.05)[0]]


def test_water_level_is_max_min_fair() -> None:
    w = np.full(4, 0.25)
    # Everyone wants more than the level: equal shares.
    assert water_level(np.array([0.3, 0.3, 0.3, 0.6]), w, 0.05) == pytest.approx(0.05)
    # Three want little: they get it all, the fourth gets the rest.
    assert water_level(np.array([0.04, 0.04, 0.04, 0.6]), w, 0.05) == pytest.approx(0.2 - 0.12)
    # Everything fits.
    assert water_level(np.array([0.01, 0.02, 0.0, 0.03]), w, 0.05) == 1.0


def test_fair_share_thresholds_split_a_tight_budget() -> None:
    rng = np.random.default_rng(0)
    fair = FairShare(window=4000)
    for _ in range(4000):
        fair.observe("sure", float(rng.uniform(0.5, 1.0)))  # 20% below 0.6
        fair.observe("unsure", float(rng.uniform(0.0, 0.6)))  # all below 0.6
    sure = rng.uniform(0.5, 1.0, 100_000)
    unsure = rng.uniform(0.0, 0.6, 100_000)
    # Calibrated at 0.6, "sure" would send 20% of its frames, "unsure" all. At a
    # board threshold of 0.3 the board sends 25% of its frames, all of them
    # "unsure"'s. Shared: "sure" gets all it wants (20%), "unsure" the rest (30%).
    thr = fair.thresholds(board=0.3, calibrated=0.6)
    assert (sure < 0.3).mean() == 0.0
    assert thr["sure"] == 0.6
    assert (unsure < thr["unsure"]).mean() == pytest.approx(0.3, abs=0.03)
    # Tighter (board 0.15: 12.5% of frames): both want more than that, both get it.
    thr = fair.thresholds(board=0.15, calibrated=0.6)
    assert (sure < thr["sure"]).mean() == pytest.approx(0.125, abs=0.03)
    assert (unsure < thr["unsure"]).mean() == pytest.approx(0.125, abs=0.03)
    # No budget binding: everyone at the board threshold.
    assert set(fair.thresholds(board=0.6, calibrated=0.6).values()) == {0.6}


def test_sources_from_flags_file_and_errors(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text('[edge]\nbundle = "demo:split"\n[[sources]]\nuri = "csi://0"\nname = "front"\n'
                    '[[sources]]\nuri = "/data/replay"\nfps = 5.0\nrealtime = true\n[mux]\nmax_batch = 4\n')
    cfg = load_edge_config(toml, {}, {})
    assert [s.source_id for s in cfg.source_specs()] == ["front", "/data/replay"]
    assert cfg.source_specs()[1].realtime and cfg.mux.max_batch == 4
    # Sources on the command line replace the file's.
    cfg = load_edge_config(toml, {}, {"sources": (SourceSpec("a"), SourceSpec("b"))})
    assert [s.uri for s in cfg.source_specs()] == ["a", "b"]
    cfg = load_edge_config(toml, {"JETSPLIT_EDGE_SOURCE": "v4l2:///dev/video0"}, {})
    assert [s.uri for s in cfg.source_specs()] == ["v4l2:///dev/video0"]
    toml.write_text('[edge]\nbundle = "demo:split"\n[[sources]]\nuri = "a"\n[[sources]]\nuri = "a"\n')
    with pytest.raises(ConfigError, match="'a' appears twice"):
        load_edge_config(toml, {}, {})
    toml.write_text('[edge]\nbundle = "demo:split"\n[[sources]]\nuri = "a"\nnmae = "x"\n')
    with pytest.raises(ConfigError, match=r"\[\[sources\]\] #1: unknown key\(s\) nmae"):
        load_edge_config(toml, {}, {})
    toml.write_text('[edge]\nbundle = "demo:split"\n[mux]\nmax_batch = 0\n')
    with pytest.raises(ConfigError, match="max_batch"):
        load_edge_config(toml, {}, {"source": "a"})


def test_engine_threads_from_the_file_and_its_errors(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text('[edge]\nbundle = "demo:split"\nsource = "a"\nengine_threads = 2\n')
    assert load_edge_config(toml, {}, {}).engine_threads == 2
    toml.write_text('[edge]\nbundle = "demo:split"\nsource = "a"\nengine_threads = 0\n')
    with pytest.raises(ConfigError, match="engine_threads: expected an integer >= 1, got 0"):
        load_edge_config(toml, {}, {})
    toml.write_text('[edge]\nbundle = "demo:split"\nsource = "a"\nengine_threads = 2\nbackend = "tensorrt"\n')
    with pytest.raises(ConfigError, match="engine_threads: tensorrt runs one batch at a time"):
        load_edge_config(toml, {}, {})


def test_is_live_by_scheme() -> None:
    assert [is_live(u) for u in ("csi://0", "v4l2:///dev/video0", "rtsp://h/s", "http://h/v.mjpg",
                                 "gst:videotestsrc ! appsink", "file://clip.mp4", "/data/", "ftp://x")] == [
        True, True, True, True, True, False, False, False]
    with pytest.raises(SourceError, match="unknown source scheme 'ftp'"):
        open_source("ftp://x")
