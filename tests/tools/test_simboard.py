"""``jetsplit simboard``: trees in each board's layout, rails that follow a real
process's load, read back by the agent's own reader."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jetsplit.cli import main
from jetsplit.edge.power import Ina3221Power, compute_watts, total_watts
from jetsplit.tools.simboard import LAYOUTS, BoardModel, LoadProbe, SimBoard, follow


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_any_total_reads_back(tmp_path: Path, layout: str) -> None:
    board = SimBoard(tmp_path, layout).create()
    reader = Ina3221Power(tmp_path)
    for watts, compute in ((5.0, 2.0), (15.0, 9.5), (7.25, None)):
        board.set(watts, compute)
        rails = reader.read_watts()
        # Currents are whole mA, as the driver gives them: 20 mW steps at 20 V.
        assert total_watts(rails) == pytest.approx(watts, abs=0.03)
        if compute is not None:
            (label,) = [ch.label for m in LAYOUTS[layout] for ch in m.channels if ch.role == "compute"]
            assert rails[label] == pytest.approx(compute, abs=0.02)
            assert compute_watts(rails) is not None and compute <= compute_watts(rails) < watts
    assert reader.read_errors == 0


def _busy_child(until: Path) -> subprocess.Popen[bytes]:
    # A real process that keeps one core busy until the file ``until`` exists,
    # then idles, then ends.
    code = f"import os, time\nwhile not os.path.exists({str(until)!r}): pass\ntime.sleep(30)"
    return subprocess.Popen([sys.executable, "-c", code])


def _cpu_settled(pid: int, timeout: float = 10.0) -> None:
    """Wait until ``pid`` uses no more CPU time over 0.3 s (its busy phase is over:
    a spinning process that a loaded machine deschedules for a moment is not idle)."""
    probe = LoadProbe(pid)
    end = time.monotonic() + timeout
    last = probe.cpu_seconds()
    while True:
        time.sleep(0.3)
        now = probe.cpu_seconds()
        if now == last:
            return
        assert time.monotonic() < end, "the child kept spinning"
        last = now


def test_rails_follow_a_process_cpu_and_bytes(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    results.write_text("")
    spin_until = tmp_path / "stop-spinning"
    child = _busy_child(spin_until)
    board = SimBoard(tmp_path / "sys", "orin-nano").create()
    model = BoardModel(idle_w=5.0, cpu_w=8.0, j_per_byte=1e-3)
    stop = threading.Event()
    trace = (tmp_path / "trace.jsonl").open("w")
    runner = threading.Thread(target=follow, args=(board, LoadProbe(child.pid, results), model, 0.02, 0.2, stop, trace))
    runner.start()
    reader = Ina3221Power(tmp_path / "sys")
    try:
        # While the child spins, the board draws more than idle (a core on a
        # shared, loaded machine: a tenth of it at least).
        end = time.monotonic() + 10
        while time.monotonic() < end and reader.total_watts() < 5.0 + 0.1 * 8.0:
            time.sleep(0.01)  # polling the rails, with a deadline
        assert reader.total_watts() >= 5.0 + 0.1 * 8.0
        # Idle again (the child told to stop and seen to stop: a moment's
        # descheduling on a loaded machine also reads near idle), then 2000 bytes
        # sent (as the agent's sink reports them): radio power.
        spin_until.touch()
        _cpu_settled(child.pid)
        end = time.monotonic() + 10
        while time.monotonic() < end and reader.total_watts() > 5.1:
            time.sleep(0.01)
        with results.open("a") as fh:
            fh.write(json.dumps({"frame": 1, "bytes_up": 1000}) + "\n" + json.dumps({"frame": 2, "bytes_up": 1000}) + "\n")
        end = time.monotonic() + 10
        while time.monotonic() < end and reader.total_watts() < 5.5:
            time.sleep(0.01)
        rails = reader.read_watts()
        assert rails["VDD_IN"] > 5.5 and rails["VDD_CPU_GPU_CV"] == pytest.approx(2.0, abs=0.1)  # radio: not compute
    finally:
        child.kill()
        child.wait()
        stop.set()
        runner.join(5)
        trace.close()
    assert not runner.is_alive()
    lines = [json.loads(x) for x in (tmp_path / "trace.jsonl").read_text().splitlines()]
    assert max(x["cpu"] for x in lines) > 0.1 and max(x["bytes_per_s"] for x in lines) > 0


def test_the_tool_ends_with_its_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(2.0)"])  # idle at the end
    try:
        assert main(["simboard", "--layout", "nano", "--root", str(tmp_path), "--pid", str(child.pid),
                     "--trace", str(tmp_path / "t.jsonl")]) == 0
    finally:
        child.wait()
    assert "following pid" in capsys.readouterr().out
    # Its last update: idle, or nearly (the child's own exit may fall in the window).
    assert 5.0 - 0.01 <= Ina3221Power(tmp_path).total_watts() < 5.0 + 0.25 * 8.0


@pytest.mark.parametrize(("args", "message"), [
    (["--layout", "tx3", "--root", "R", "--watts", "5"], "--layout: expected one of"),
    (["--layout", "nano", "--root", "R"], "expected --pid PID"),
    (["--layout", "nano", "--root", "R", "--pid", "999999999"], "no such process"),
    (["--layout", "nano", "--root", "R", "--pid", "1", "--cpu-w", "-1"], "--cpu-w: expected a number >= 0"),
    (["--layout", "nano", "--root", "/proc/no/board", "--watts", "5"], "cannot write the sysfs tree there"),
])
def test_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    args = [str(tmp_path / "sys") if a == "R" else a for a in args]
    assert main(["simboard", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
