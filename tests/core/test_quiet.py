"""A quiet console (issue 11, item 9): library chatter becomes one line of ours, or
is dropped with the reason in jetsplit/quiet.py."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import warnings

import numpy as np
import pytest

from jetsplit.quiet import drop_records, one_line_for
from tests.support.daemons import JETSPLIT


def test_a_gate_fit_that_runs_out_of_iterations_is_one_line_of_ours(caplog: pytest.LogCaptureFixture) -> None:
    from sklearn.neural_network import MLPClassifier

    from jetsplit.calibration.gates_train import _converged

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(150, 10)), rng.random(150) < 0.5
    with warnings.catch_warnings(record=True) as leaked, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        with _converged("support gate", "3"):  # the fit the gate trainer makes, stopped early
            MLPClassifier(hidden_layer_sizes=(16,), max_iter=3, random_state=0).fit(x, y)
    assert [w for w in leaked if "Convergence" in w.category.__name__] == []
    assert [r.getMessage() for r in caplog.records] == [
        "support gate: training stopped at its limit of 3 iterations before converging; the gate is kept and "
        "is usually fine (more training data, or a margin gate, avoids this)"]


def test_other_warnings_pass_through_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("test.quiet")
    with pytest.warns(DeprecationWarning, match="old"), caplog.at_level(logging.WARNING):
        with one_line_for(UserWarning, log, "ours"):
            warnings.warn("old", DeprecationWarning, stacklevel=1)
    assert caplog.records == []


def test_dropped_records_are_only_those_named(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), drop_records("Please consider"):
        logging.warning("Please consider to run pre-processing before quantization.")
        logging.warning("something else")
    assert [r.getMessage() for r in caplog.records] == ["something else"]


def test_an_unreachable_stream_is_our_line_alone(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    # A camera that cannot be opened is retried while the agent runs: read its log
    # until our line says so, then stop it as systemd would.
    proc = subprocess.Popen([JETSPLIT, "edge", "run", "--bundle", "demo:split", "--source",
                             f"rtsp://127.0.0.1:{port}/cam"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env, stdin=subprocess.DEVNULL)
    lines: list[str] = []
    ours = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line.rstrip("\n"))
            if "cannot open the capture" in line:
                ours.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert ours.wait(120), lines
    finally:
        proc.terminate()
        proc.wait(60)
        reader.join(10)
    assert any(line.endswith(f"rtsp://127.0.0.1:{port}/cam: cannot open the capture: stream unreachable or codec "
                             "unsupported (retrying with backoff)") for line in lines)
    # FFmpeg's "[tcp @ 0x...] Connection ... failed", OpenCV's "[ WARN:0@0.4] global cap.cpp ...": none.
    assert [line for line in lines if line.startswith("[")] == []
