"""The agent's energy follows the board's sensor: its meter's sampler runs for
the agent's run, on trees laid out as on each board, with nothing patched in
the agent."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.datasets import load_dataset
from jetsplit.edge.agent import EdgeAgent
from jetsplit.edge.config import EdgeConfig
from jetsplit.edge.frame import Frame, Source
from jetsplit.edge.power import PowerConfig
from jetsplit.edge.sinks import FrameResult
from jetsplit.tools.simboard import SimBoard


class _Digits(Source):
    """scikit-learn's digits, cycled until the agent is stopped, read on demand."""

    def __init__(self) -> None:
        super().__init__("digits:test")
        data = load_dataset("digits", "test")
        self._images, self._labels, self._names = data.images, data.labels, data.class_names

    def read(self, timeout: float | None = None) -> Frame | None:
        if self._closed:
            return None
        i = self._index % len(self._images)
        return self._frame(self._images[i], self._names[self._labels[i]])


def _median_mj(results: list[FrameResult]) -> float:
    """Per-frame windows vary on a shared machine; their median over hundreds does not much."""
    return float(np.median([r.energy_mj for r in results]))


@pytest.mark.parametrize("layout", ["orin-nano", "nano", "agx-orin"])
def test_a_step_in_the_board_reaches_the_frames_within_half_a_second(make_bundle: Any, tmp_path: Path,
                                                                    layout: str) -> None:
    board = SimBoard(tmp_path / "sys", layout).create()
    board.set(5.0)
    bundle = make_bundle("little-big")
    power = PowerConfig(source="ina3221", sysfs_root=str(tmp_path / "sys"), interval_ms=20)
    agent = EdgeAgent(EdgeConfig(bundle=str(bundle.root), source="digits:test", sinks=(), power=power))
    images = load_dataset("digits", "test").images
    before: list[float] = []
    after: list[tuple[float, float]] = []
    t_step = None
    try:
        for k in range(100_000):
            frame = Frame(k, images[k % len(images)], time.monotonic())
            t0 = time.monotonic()
            (r,) = agent.process_batch([frame])
            # The frame's energy over the call that processed it (its window and
            # a little more): the board's power, or a few percent under it.
            watts = r.energy_mj / ((time.monotonic() - t0) * 1000.0)
            if t_step is None:
                before.append(watts)
                if k == 300:
                    board.set(15.0)
                    t_step = time.monotonic()
            else:
                after.append((t0 - t_step, watts))
                if t0 - t_step > 1.0:
                    break
    finally:
        agent.close()
    assert agent.meter.status()["interval_ms"] == 20.0
    pre = np.array(before[50:])
    late = np.array([w for dt, w in after if dt > 0.5])
    assert len(late) > 20
    seen = 2.0 * float(np.median(pre))  # twice what the frames saw at 5 W: the 15 W has arrived
    first = min(dt for dt, w in after if w > seen)
    print(f"{layout}: median {np.median(pre):.2f} W before, {np.median(late):.2f} W from 0.5 s after "
          f"(x{np.median(late) / np.median(pre):.3f}); first frame past x2 {first * 1000:.0f} ms after the step")
    # The call holds more than the window (the result is made after it): the
    # frames read the board's power or under it, never over.
    assert pre.max() <= 5.0 * 1.01 and np.median(pre) > 0.6 * 5.0
    assert np.median(late) / np.median(pre) == pytest.approx(3.0, rel=0.05) and late.max() <= 15.0 * 1.01
    # From half a second after the step on, the frames see it (95%: a frame
    # preempted inside its call reads lower); the first within half a second.
    assert np.mean(late > seen) >= 0.95 and first < 0.5


def test_a_sensor_that_fails_mid_run_is_said_once_and_the_model_takes_over(
        make_bundle: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    SimBoard(tmp_path / "sys", "orin-nano").create().set(8.0)
    bundle = make_bundle("little-big")
    power = PowerConfig(source="ina3221", sysfs_root=str(tmp_path / "sys"), interval_ms=10, idle_w=3.0)
    agent = EdgeAgent(EdgeConfig(bundle=str(bundle.root), source="digits:test", sinks=(), power=power),
                      source=_Digits())
    results = []
    images = load_dataset("digits", "test").images
    watts = []
    with caplog.at_level("ERROR", logger="jetsplit.edge.power"):
        try:
            for r in agent.results():
                results.append(r)
                if len(results) == 100:
                    shutil.rmtree(tmp_path / "sys")  # the monitor's driver went away
                if agent.meter.failed_over and len(results) > 400:
                    agent.stop()
            # From the failure on, the model's 3 W idle (frames through the same agent).
            for k in range(50):
                t0 = time.monotonic()
                (r,) = agent.process_batch([Frame(k, images[k], t0)])
                watts.append(r.energy_mj / ((time.monotonic() - t0) * 1000.0))
        finally:
            agent.close()
    assert len([r for r in caplog.records if "takes over" in r.getMessage()]) == 1
    assert len([r for r in caplog.records if r.levelname == "ERROR"]) == 1
    summary = agent.stats.summary()
    assert summary["power"]["source"] == "model" and "no rail could be read" in summary["power"]["sampler_failed"]
    assert all(r.energy_mj > 0 for r in results)  # every frame still has its energy
    assert 0.5 * 3.0 < np.median(watts) <= 3.0 * 1.01


def test_power_flag_mistakes_are_one_line(make_bundle: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from jetsplit.cli import main

    bundle = make_bundle("little-big")
    base = ["edge", "run", "--bundle", str(bundle.root), "--source", str(tmp_path)]
    assert main([*base, "--power-source", "sysfs:"]) == 2
    assert capsys.readouterr().err.strip().endswith("--power-source: expected sysfs or sysfs:ROOT, got 'sysfs:'")
    assert main([*base, "--power-source", "sysfs:" + str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "no INA3221 rails under" in err[-1]
