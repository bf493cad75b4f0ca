"""``jetsplit power`` on sysfs trees laid out as on the boards (tests/conftest.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from jetsplit.cli import main
from jetsplit.edge.power import Ina3221Power
from jetsplit.tools.power import sample_power

_ORIN_HWMON = "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1"


def test_window_follows_the_rails_as_they_change(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    root = jetson_sysfs("orin-nano")
    hw = root / _ORIN_HWMON
    reader = Ina3221Power(root)
    # VDD_IN draws these mA at the samples taken at t = 0, 1, 2, 3 s; the CPU/GPU
    # rail is mid-conversion at t = 2 (a read error, left out of that sample).
    vdd_in_ma = [1000, 1200, 1600, 1000]
    now = [0.0]

    def step(seconds: float) -> None:
        now[0] += seconds
        k = round(now[0])
        (hw / "curr1_input").write_text(f"{vdd_in_ma[k]}\n")
        (hw / "curr2_input").write_text("busy\n" if k == 2 else "296\n")

    (hw / "curr1_input").write_text(f"{vdd_in_ma[0]}\n")
    window = sample_power(reader, seconds=3.0, interval_s=1.0, clock=lambda: now[0], sleep=step)
    watts = [5.072 * ma / 1000 for ma in vdd_in_ma]
    assert window.samples == 4 and window.seconds == pytest.approx(3.0)
    vdd_in = window.rails["VDD_IN"]
    assert (vdd_in.mean_w, vdd_in.min_w, vdd_in.max_w) == pytest.approx((sum(watts) / 4, watts[0], watts[2]))
    assert window.rails["VDD_SOC"].min_w == window.rails["VDD_SOC"].max_w == pytest.approx(5.064 * 0.392)
    assert window.rails["VDD_CPU_GPU_CV"].samples == 3 and window.read_errors == 1
    # The board total is the input rail, not a sum; energy integrates it (trapezoids).
    assert window.total_label == "input rail VDD_IN" and window.total.mean_w == pytest.approx(vdd_in.mean_w)
    assert window.energy_j == pytest.approx(sum(0.5 * (a + b) for a, b in zip(watts, watts[1:])))


def test_cli_json_sums_rails_without_an_input_rail(tmp_path: Path, jetson_sysfs: Callable[..., Path],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    root = jetson_sysfs("agx-orin")
    assert main(["power", "--source", f"sysfs:{root}", "--seconds", "0.2", "--interval-ms", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "ina3221" and out["samples"] == 5
    assert sorted(out["rails"]) == ["VDDQ_VDD2_1V8AO", "VDD_CPU_CV", "VDD_GPU_SOC", "VIN_SYS_5V0"]  # NC skipped
    gpu = out["rails"]["VDD_GPU_SOC"]
    assert gpu["mean_w"] == gpu["min_w"] == gpu["max_w"] == pytest.approx(19.968 * 0.680)
    total = sum(r["mean_w"] for r in out["rails"].values())
    assert out["total_label"] == "sum of rails" and out["total"]["mean_w"] == pytest.approx(total)
    assert out["energy_j"] == pytest.approx(total * out["seconds"])


def test_cli_text_names_rails_and_the_total(tmp_path: Path, jetson_sysfs: Callable[..., Path],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    root = jetson_sysfs("nano")
    assert main(["power", "--source", f"sysfs:{root}", "--seconds", "0.1", "--interval-ms", "50"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.startswith(("POM_", "total "))}
    assert set(rows) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU", "total"}
    assert rows["POM_5V_IN"] == ["3.412"] * 3 and rows["total"] == ["3.412"] * 3
    assert "total: the board's input rail POM_5V_IN; energy" in out


def _edge_toml(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def test_no_rails_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["power", "--source", f"sysfs:{tmp_path / 'none'}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no INA3221 rails under" in err
    # auto (here: an edge.toml's sysfs root and jtop socket that lead nowhere)
    # must not pass the model off as a reading.
    cfg = _edge_toml(tmp_path / "edge.toml", f'[power]\nsysfs_root = "{tmp_path / "none"}"\n'
                                             f'jtop_socket = "{tmp_path / "jtop.sock"}"\n')
    assert main(["power", "--config", str(cfg), "--seconds", "0.1", "--interval-ms", "50"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("jetsplit power: error: no power rails on this machine")
    assert "jtop" in err and "no INA3221 rails" in err and "--source model" in err


def test_auto_finds_the_rails_an_edge_config_points_at(tmp_path: Path, jetson_sysfs: Callable[..., Path],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    root = jetson_sysfs("orin-nano", tmp_path / "sys")
    cfg = _edge_toml(tmp_path / "edge.toml", f'[power]\nsysfs_root = "{root}"\njtop_socket = "{tmp_path / "x"}"\n')
    assert main(["power", "--config", str(cfg), "--seconds", "0.1", "--interval-ms", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "ina3221" and "jtop" in out["description"]  # says why jtop was not used


def test_model_only_when_asked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _edge_toml(tmp_path / "edge.toml", "[power.model]\nidle_w = 4.5\n")
    assert main(["power", "--source", "model", "--config", str(cfg), "--seconds", "0.1",
                 "--interval-ms", "50", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["source"] == "model" and out["rails"]["model"]["mean_w"] == pytest.approx(4.5)
    assert out["energy_j"] == pytest.approx(4.5 * out["seconds"])
    assert main(["power", "--source", "model", "--seconds", "0.1", "--interval-ms", "50"]) == 0
    assert "not a measurement" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--source", "tegrastats"], "--source: expected auto, jtop, sysfs, sysfs:ROOT or model, got 'tegrastats'"),
    (["--source", "sysfs:"], "--source: expected sysfs or sysfs:ROOT"),
    (["--interval-ms", "0"], "--interval-ms: expected a number > 0"),
    (["--seconds", "0.1", "--interval-ms", "500"], "at most the window (100 ms), got 500"),
    (["--seconds", "-1"], "--seconds: expected a number > 0, got -1"),
    (["--config", "/nonexistent/edge.toml"], "/nonexistent/edge.toml: no such file"),
])
def test_bad_input(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["power", "--source", "model", *args] if "--source" not in args else ["power", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
