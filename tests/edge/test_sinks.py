"""Result records and sinks: JSON lines, stdout, a real ZeroMQ SUB, the queue."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from jetsplit.edge.sinks import (
    FrameResult,
    JsonLinesSink,
    MultiSink,
    QueueSink,
    Sink,
    open_sink,
    open_sinks,
)
from jetsplit.errors import ConfigError


def _result(i: int, **kw: Any) -> FrameResult:
    base: dict[str, Any] = {
        "frame": i, "class_id": 7, "label": "7", "score": 0.91, "stage": "little", "where": "edge",
        "latency_ms": 3.2, "bytes_up": 0, "energy_mj": 41.5, "t_capture": 1234.5,
    }
    base.update(kw)
    return FrameResult(**base)


def test_to_json_is_one_plain_line() -> None:
    r = _result(np.int64(3), class_id=np.int64(2), label="2", score=np.float32(0.5), truth="2",
                where="fallback", reason="deadline", threshold=np.float64(0.4))  # type: ignore[arg-type]
    line = r.to_json()
    assert "\n" not in line
    d = json.loads(line)
    for key in ("frame", "class_id", "label", "score", "stage", "where", "latency_ms", "bytes_up", "energy_mj", "truth", "t_capture"):
        assert key in d
    assert d["frame"] == 3 and d["reason"] == "deadline" and r.correct is True
    assert FrameResult.from_json(line) == FrameResult.from_dict(d)
    assert "truth" not in json.loads(_result(0).to_json())  # unlabelled: no truth key
    with pytest.raises(ValueError, match="where"):
        _result(0, where="elsewhere")


def test_jsonl_file_and_stdout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "out" / "results.jsonl"
    with open_sink(f"jsonl:{path}") as sink:
        for i in range(3):
            sink.write(_result(i))
    assert [json.loads(line)["frame"] for line in path.read_text().splitlines()] == [0, 1, 2]
    sink = open_sink("stdout")
    sink.write(_result(9, where="cloud", stage="big"))
    sink.close()
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and json.loads(out[0])["where"] == "cloud"


def test_zmq_pub_reaches_a_subscriber(tmp_path: Path) -> None:
    ctx = zmq.Context()
    endpoint = f"ipc://{tmp_path}/results"
    sink = open_sink(f"zmq-pub:{endpoint}", context=ctx)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.subscribe(b"")
    sub.connect(endpoint)
    try:
        # PUB drops until the subscription arrives: publish a probe until one
        # is received (polling with a timeout, no sleeping).
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        for _ in range(200):
            sink.write(_result(-1))
            if poller.poll(25):
                break
        else:
            pytest.fail("subscriber never connected")
        while poller.poll(25):  # drain the probes
            sub.recv()
        for i in range(50):
            sink.write(_result(i, truth="7"))
        got = []
        while len(got) < 50 and poller.poll(2000):
            got.append(FrameResult.from_json(sub.recv()))
        assert [r.frame for r in got] == list(range(50)) and all(r.correct for r in got)
    finally:
        sink.close()
        sub.close()
        ctx.term()


def test_zmq_bind_error_is_a_config_error(tmp_path: Path) -> None:
    ctx = zmq.Context()
    try:
        with pytest.raises(ConfigError, match="cannot bind"):
            open_sink("zmq-pub:tcp://256.0.0.1:5", context=ctx)
    finally:
        ctx.term()


def test_queue_sink_iterates_until_closed() -> None:
    sink = open_sink("queue")
    assert isinstance(sink, QueueSink)

    def produce() -> None:
        try:
            for i in range(5):
                sink.write(_result(i))
        finally:
            sink.close()

    thread = threading.Thread(target=produce)
    thread.start()
    assert [r.frame for r in sink] == list(range(5))
    thread.join(5.0)
    assert sink.get(timeout=1.0) is None

    bounded = QueueSink(maxsize=2)
    for i in range(5):
        bounded.write(_result(i))
    bounded.close()
    assert [r.frame for r in bounded] == [3, 4] and bounded.dropped == 3


def test_multi_sink_survives_a_failing_sink(tmp_path: Path) -> None:
    class Broken(Sink):
        spec = "broken"

        def write(self, result: FrameResult) -> None:
            raise BrokenPipeError("reader went away")

    good = JsonLinesSink(tmp_path / "r.jsonl")
    multi = MultiSink([Broken(), good])
    for i in range(4):
        multi.write(_result(i))
    multi.close()
    assert good.written == 4 and multi.errors == {"broken": 4}


@pytest.mark.parametrize("spec", ["jsonl:", "zmq-pub", "kafka:topic", "stderr", ""])
def test_bad_specs(spec: str) -> None:
    with pytest.raises(ConfigError, match="sink"):
        open_sinks(["queue", spec])
