"""Power readers on sysfs trees laid out as on the boards, the model, the meter."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from jetsplit.edge.power import (
    EnergyMeter,
    Ina3221Power,
    ModelPower,
    PowerConfig,
    PowerReader,
    detect_power,
    total_watts,
)
from jetsplit.errors import ConfigError


def test_orin_nano_rails(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("orin-nano")
    reader = Ina3221Power(tmp_path)
    watts = reader.read_watts()
    assert list(watts) == ["VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"]  # once, though reachable twice
    assert watts["VDD_IN"] == pytest.approx(5.072 * 1.248)
    assert watts["VDD_SOC"] == pytest.approx(5.064 * 0.392)
    assert reader.total_watts() == pytest.approx(watts["VDD_IN"])  # the input rail, not a sum
    assert "3 rails" in reader.description


def test_agx_orin_skips_nc_and_sums(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("agx-orin")
    watts = Ina3221Power(tmp_path).read_watts()
    assert sorted(watts) == ["VDDQ_VDD2_1V8AO", "VDD_CPU_CV", "VDD_GPU_SOC", "VIN_SYS_5V0"]
    assert total_watts(watts) == pytest.approx(sum(watts.values()))
    assert watts["VDD_GPU_SOC"] == pytest.approx(19.968 * 0.680)


def test_nano_iio_layout(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("nano")
    reader = Ina3221Power(tmp_path)
    watts = reader.read_watts()
    assert watts == pytest.approx({"POM_5V_IN": 3.412, "POM_5V_GPU": 0.080, "POM_5V_CPU": 0.802})
    assert reader.total_watts() == pytest.approx(3.412)


def test_a_rail_that_fails_to_read_is_left_out(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("orin-nano")
    reader = Ina3221Power(tmp_path)
    (tmp_path / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr2_input").write_text("busy\n")
    assert "VDD_CPU_GPU_CV" not in reader.read_watts() and reader.read_errors == 1


def test_detect_falls_back_and_says_why(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("orin-nano")
    reader = detect_power(PowerConfig(sysfs_root=str(tmp_path), jtop_socket=str(tmp_path / "jtop.sock")))
    assert reader.kind == "ina3221" and "jtop" in reader.description
    reader = detect_power(PowerConfig(sysfs_root=str(tmp_path / "none"), jtop_socket=str(tmp_path / "x"), idle_w=3.0))
    assert reader.kind == "model" and "no INA3221" in reader.description and "jtop" in reader.description
    with pytest.raises(ConfigError, match="jtop"):
        detect_power(PowerConfig(source="jtop", jtop_socket=str(tmp_path / "x")))
    with pytest.raises(ConfigError, match="ina3221"):
        detect_power(PowerConfig(source="ina3221", sysfs_root=str(tmp_path / "none")))


def test_power_config_table() -> None:
    cfg = PowerConfig.from_table({"source": "model", "model": {"idle_w": 4, "j_per_byte": 1e-8, "stage_w": {"little": 7.5}}})
    assert cfg.stage_w == {"little": 7.5} and cfg.idle_w == 4.0
    with pytest.raises(ConfigError, match=r"\[power\].source"):
        PowerConfig.from_table({"source": "tegrastats"})
    with pytest.raises(ConfigError, match="unknown key"):
        PowerConfig.from_table({"model": {"idle": 4}})


def test_model_energy_per_frame() -> None:
    clock = [0.0]
    model = ModelPower(idle_w=4.0, stage_w={"little": 10.0}, j_per_byte=1e-6, clock=lambda: clock[0])
    meter = EnergyMeter(model, clock=lambda: clock[0])
    # 20 ms frame: 5 ms of 'little' at 10 W, 15 ms idle at 4 W, 1000 bytes.
    joules = meter.frame_energy_j(0.0, 0.020, {"little": 5.0}, bytes_up=1000)
    assert joules == pytest.approx(0.050 + 0.060 + 0.001)
    clock[0] = 0.020
    assert model.read_watts()["model"] > 4.0


def test_meter_integrates_between_samples() -> None:
    class Ramp(PowerReader):
        kind = "test"

        def read_watts(self) -> dict[str, float]:
            return {"VDD_IN": 2.0 + now[0]}  # 2 W rising 1 W/s

    now = [0.0]
    meter = EnergyMeter(Ramp(), clock=lambda: now[0])
    for t in (0.0, 1.0, 2.0):
        now[0] = t
        meter.sample()
    assert meter.energy_j(0.0, 2.0) == pytest.approx(2 * 2.0 + 0.5 * 2 * 2)
    assert meter.energy_j(0.5, 1.5) == pytest.approx(3.0)
    assert meter.energy_j(2.0, 3.0) == pytest.approx(4.0)  # held after the last sample
    assert meter.average_watts(window_s=2.0) == pytest.approx(3.0)
    assert meter.frame_energy_j(1.0, 1.1) == pytest.approx(0.1 * 3.05)


def test_meter_thread_samples_and_stops(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("nano")
    meter = EnergyMeter(Ina3221Power(tmp_path)).start(interval_s=0.005)
    meter.stop()
    assert meter.error is None and meter.energy_j(0.0, 1.0) == pytest.approx(3.412)
