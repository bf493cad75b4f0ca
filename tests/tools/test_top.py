"""``jetsplit top`` against real result sinks: a ZmqPubSink publishing real
FrameResult records on ipc, and a real ``jetsplit edge run`` with a zmq-pub sink."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from jetsplit.cli import main
from jetsplit.edge.sinks import FrameResult, ZmqPubSink
from jetsplit.tools.top import Subscriber, format_window, summarize
from tests.support.daemons import Daemon
from tests.support.frames import digits_folder

_MARKER = -1  # frame index of the records sent until the subscriber is connected


def _result(frame: int, where: str, latency_ms: float, bytes_up: int = 0, energy_mj: float = 0.0,
            reason: str | None = None) -> FrameResult:
    return FrameResult(frame, 7, "7", 0.9, "tail" if where == "cloud" else "head", where,  # type: ignore[arg-type]
                       latency_ms, bytes_up=bytes_up, energy_mj=energy_mj, reason=reason)


def _connected(sink: ZmqPubSink, sub: Subscriber) -> None:
    """PUB drops what it sends before a subscriber has joined: send markers until one arrives."""
    end = time.monotonic() + 10
    while not sub.first(0.02):
        assert time.monotonic() < end, "the subscriber never connected"
        sink.write(_result(_MARKER, "edge", 1.0))


def _window_records() -> list[FrameResult]:
    """20 frames with latencies 1..20 ms: 12 edge, 5 cloud, 2 deadline fallbacks
    (sent, 1000 B each like the cloud ones) and 1 fallback that never left."""
    kinds = ["edge"] * 12 + ["cloud"] * 5 + ["deadline"] * 2 + ["circuit open"]
    out = []
    for i, kind in enumerate(kinds):
        latency = float(i + 1)
        if kind == "edge":
            out.append(_result(i, "edge", latency, energy_mj=10.0))
        elif kind == "cloud":
            out.append(_result(i, "cloud", latency, bytes_up=1000, energy_mj=40.0))
        else:
            sent = 1000 if kind == "deadline" else 0
            out.append(_result(i, "fallback", latency, bytes_up=sent, energy_mj=40.0, reason=kind))
    return out


def test_window_of_published_results(tmp_path: Path) -> None:
    sink = ZmqPubSink(f"ipc://{tmp_path}/results.sock")
    sub = Subscriber(f"zmq-pub:{sink.endpoint}")
    try:
        _connected(sink, sub)
        for r in _window_records():
            sink.write(r)
        got: list[FrameResult] = []
        end = time.monotonic() + 10
        while len(got) < 20 and time.monotonic() < end:
            got += [r for r in sub.receive(0.05) if r.frame != _MARKER]
    finally:
        sub.close()
        sink.close()
    assert [r.frame for r in got] == list(range(20))
    w = summarize(got, seconds=2.0, endpoint=sub.endpoint)
    assert (w.frames, w.fps) == (20, 10.0)
    assert (w.edge, w.cloud, w.fallback) == pytest.approx((0.60, 0.25, 0.15))
    assert w.offload_rate == pytest.approx(7 / 20)  # the fallback that never left sent nothing
    assert (w.p50_ms, w.p95_ms) == pytest.approx((10.5, 19.05))
    assert w.bytes_per_frame == pytest.approx(350.0) and w.uplink_kbit_s == pytest.approx(28.0)
    assert w.energy_mj_per_frame == pytest.approx((12 * 10 + 8 * 40) / 20)
    assert w.exits == {"head": 15, "tail": 5}
    assert w.fallback_reasons == {"deadline": 2, "circuit open": 1}


def test_rates_per_source() -> None:
    rs = []
    for i in range(30):  # "gate" 20 frames, 5 offloaded; "dock" 10 frames, 1 fell back
        sid = "gate" if i % 3 else "dock"
        r = _result(i, "cloud" if i % 4 == 1 else "edge", float(i), bytes_up=100 if i % 4 == 1 else 0)
        r.source_id = sid
        rs.append(r)
    rs[0].where, rs[0].reason = "fallback", "circuit open"
    w = summarize(rs, seconds=2.0)
    assert set(w.sources) == {"gate", "dock"}
    gate, dock = w.sources["gate"], w.sources["dock"]
    assert (gate.frames, gate.fps, dock.frames, dock.fps) == (20, 10.0, 10, 5.0)
    assert gate.offload_rate == pytest.approx(sum(1 for i in range(30) if i % 3 and i % 4 == 1) / 20)
    assert dock.fallback == pytest.approx(0.1) and gate.fallback == 0.0
    text = format_window(w)
    rows = {line.split()[0]: line.split() for line in text.splitlines()[-3:]}
    assert rows["source"] == ["source", "frames/s", "offload", "cloud", "fallback", "p95", "ms"]
    assert rows["gate"][1] == "10.0" and rows["dock"][1] == "5.0" and rows["dock"][4] == "10.0%"
    assert json.loads(json.dumps(w.to_json()))["sources"]["dock"]["frames"] == 10


def test_no_energy_and_empty_windows() -> None:
    w = summarize([_result(0, "edge", 3.0), _result(1, "cloud", 9.0, bytes_up=500)], seconds=1.0)
    assert w.energy_mj_per_frame is None and w.offload_rate == 0.5  # no frame carried energy: not 0 mJ
    empty = summarize([], seconds=2.0, endpoint="ipc:///x")
    assert empty.frames == 0 and empty.fps == 0.0 and empty.p50_ms is None and empty.edge == 0.0


def test_messages_that_are_not_results_are_counted_and_skipped(tmp_path: Path) -> None:
    ctx: zmq.Context[Any] = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(f"ipc://{tmp_path}/other.sock")
    sub = Subscriber(f"ipc://{tmp_path}/other.sock")
    try:
        good = _result(5, "edge", 2.0).to_json().encode()
        end = time.monotonic() + 10
        got: list[FrameResult] = []
        while not got:
            assert time.monotonic() < end
            pub.send(good)
            got = sub.first(0.02)
        before = sub.bad
        for msg in (b"not json", b"[1, 2]", b'{"frame": 1}', b'{"frame": 1, "class_id": 1, "label": "1", "score": 1, '
                    b'"stage": "s", "where": "moon", "latency_ms": 1}', good):
            pub.send(msg)
        got = []
        while not got:
            assert time.monotonic() < end
            got = sub.first(0.05)
    finally:
        sub.close()
        pub.close(0)
    assert [r.frame for r in got] == [5] and sub.bad - before == 4


@pytest.fixture
def publishing(tmp_path: Path) -> Iterator[str]:
    """A ZmqPubSink publishing the same kind of record every 2 ms until teardown:
    every other frame offloaded with 800 B and answered by the cloud, 12.5 ms each,
    30 mJ each, so a window of any length has known figures."""
    sink = ZmqPubSink(f"ipc://{tmp_path}/live.sock")
    stop = threading.Event()

    def run() -> None:
        i = 0
        while not stop.wait(0.002):
            where = "cloud" if i % 2 else "edge"
            sink.write(_result(i, where, 12.5, bytes_up=800 if where == "cloud" else 0, energy_mj=30.0))
            i += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield sink.endpoint
    stop.set()
    thread.join(5)
    sink.close()


def test_once_json(publishing: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", publishing, "--once", "--interval", "0.3", "--json"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    w = json.loads(lines[0])
    assert w["frames"] > 0 and w["endpoint"] == publishing and w["seconds"] == 0.3
    assert w["edge"] + w["cloud"] == pytest.approx(1.0) and w["fallback"] == 0
    assert w["offload_rate"] == pytest.approx(w["cloud"])
    assert w["bytes_per_frame"] == pytest.approx(800 * w["offload_rate"])
    assert w["p50_ms"] == w["p95_ms"] == 12.5 and w["energy_mj_per_frame"] == 30.0
    assert set(w["exits"]) <= {"head", "tail"} and "accuracy" not in w


def test_once_text(publishing: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", f"zmq-pub:{publishing}", "--once", "--interval", "0.2"]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0]: line for line in out.splitlines()}
    assert out.startswith(f"jetsplit top {publishing}  window 0.2 s")
    assert {"frames/s", "offload rate", "answered", "latency", "uplink", "energy", "exits"} <= set(rows)
    assert "p50 12.5 ms  p95 12.5 ms" in rows["latency"] and "30.00 mJ/frame" in rows["energy"]


def test_once_with_nothing_published(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", f"ipc://{tmp_path}/nobody.sock", "--once", "--wait", "0.2"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no results on ipc://" in err and "--sink zmq-pub:" in err


@pytest.mark.parametrize(("args", "message"), [
    (["nonsense"], "ENDPOINT 'nonsense': cannot connect"),
    (["zmq-pub:"], "ENDPOINT: expected a ZeroMQ endpoint"),
    (["ipc:///tmp/x.sock", "--interval", "0"], "--interval: expected seconds > 0, got 0"),
    (["ipc:///tmp/x.sock", "--once", "--wait", "-1"], "--wait: expected seconds >= 0, got -1"),
])
def test_bad_input(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["top", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jetsplit top: error: ") and message in err


def test_on_a_running_agent(make_bundle: Any, worker_thread: Any, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """A real `jetsplit edge run` process on digits, paced like a camera, with a
    real worker: top sees its results as the agent publishes them."""
    bundle = make_bundle("split")
    cloud = worker_thread(bundle).endpoints[0]
    digits_folder(tmp_path / "frames", 300)
    results = f"ipc://{tmp_path}/results.sock"
    log = tmp_path / "results.jsonl"
    edge = Daemon("edge", "run", "--bundle", str(bundle.root), "--cloud", cloud, "--source", str(tmp_path / "frames"),
                  "--sink", f"zmq-pub:{results}", "--sink", f"jsonl:{log}", "--realtime", "--fps", "100",
                  "--deadline-ms", "1000", "--log-level", "WARNING")
    try:
        assert main(["top", f"zmq-pub:{results}", "--once", "--interval", "1", "--wait", "15", "--json"]) == 0
        assert edge.proc.wait(30) == 0
    finally:
        edge.stop()
    w = json.loads(capsys.readouterr().out)
    published = [json.loads(line) for line in log.read_text().splitlines()]
    assert 0 < w["frames"] <= len(published)
    assert w["cloud"] > 0 and w["edge"] > 0  # the worker answered some, the edge gate kept others
    assert w["edge"] + w["cloud"] + w["fallback"] == pytest.approx(1.0)
    assert w["bytes_per_frame"] > 0 and w["offload_rate"] >= w["cloud"]
    # Every offloaded frame of this bundle sends the same carry: bytes per frame is
    # the offload rate times what the agent logged for one.
    sent = {r["bytes_up"] for r in published if r["bytes_up"]}
    assert w["bytes_per_frame"] == pytest.approx(w["offload_rate"] * sum(sent) / len(sent), rel=0.05)
    assert w["energy_mj_per_frame"] > 0  # the agent's power model attributes energy to every frame
    assert set(w["exits"]) <= {"head", "tail"} and 0 < w["p50_ms"] <= w["p95_ms"]
