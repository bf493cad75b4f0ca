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


# -- the sampler's lifecycle, the split, the board's mode -----------------------


def _wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)  # polling a condition, with a deadline
    return predicate()


def test_sampler_follows_the_rails(tmp_path: Path) -> None:
    from jetsplit.tools.simboard import SimBoard

    board = SimBoard(tmp_path, "orin-nano").create()
    board.set(5.0)
    meter = EnergyMeter(Ina3221Power(tmp_path)).start(interval_s=0.01)
    try:
        assert meter.average_watts(0.01) == pytest.approx(5.0, rel=1e-3)
        board.set(15.0)
        # Polling what a frame would see: the board's power over the last 10 ms.
        assert _wait_for(lambda: meter.energy_j(meter.samples()[-1][0] - 0.01, meter.samples()[-1][0]) > 0.149)
    finally:
        meter.stop()
    assert meter.status()["interval_ms"] == pytest.approx(10.0) and "sampler_failed" not in meter.status()


def test_a_failing_sensor_is_reported_once_and_the_model_takes_over(
        tmp_path: Path, jetson_sysfs: Callable[..., Path], caplog: pytest.LogCaptureFixture) -> None:
    import shutil

    jetson_sysfs("nano")
    model = ModelPower(idle_w=4.0, j_per_byte=1e-6)
    meter = EnergyMeter(Ina3221Power(tmp_path), fallback=model)
    with caplog.at_level("ERROR", logger="jetsplit.edge.power"):
        meter.start(interval_s=0.005)
        shutil.rmtree(tmp_path / "bus")  # the driver unbound: every read fails
        assert _wait_for(lambda: meter.failed_over)
        meter.stop()
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "the power model takes over" in errors[0].getMessage()
    status = meter.status()
    assert status["source"] == "model" and "no rail could be read" in status["sampler_failed"]
    # From now on the model: 4 W for 10 ms, plus 1000 bytes at 1 uJ.
    e = meter.frame_energy(0.0, 0.010, {}, bytes_up=1000)
    assert (e.compute_j, e.radio_j) == pytest.approx((0.040, 0.001))


def test_one_bad_read_is_not_a_failure(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("orin-nano")
    curr = tmp_path / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon1/curr1_input"
    reader = Ina3221Power(tmp_path)
    meter = EnergyMeter(reader, fallback=ModelPower(idle_w=4.0), max_failures=3)
    meter.sample()
    for name in ("curr1_input", "curr2_input", "curr3_input"):
        (curr.parent / name).write_text("")  # every channel mid-conversion, once
    with pytest.raises(Exception, match="no rail could be read"):
        meter.sample()
    assert not meter.failed_over and meter.kind == "ina3221"


def test_frame_energy_splits_compute_and_radio(tmp_path: Path, jetson_sysfs: Callable[..., Path]) -> None:
    jetson_sysfs("nano")
    meter = EnergyMeter(Ina3221Power(tmp_path), fallback=ModelPower(idle_w=1.0, j_per_byte=2e-6))
    meter.sample()
    e = meter.frame_energy(0.0, 0.5, {"little": 1.0}, bytes_up=500)
    # The board's 3.412 W over the window; the radio's share from its J/B.
    assert (e.compute_j, e.radio_j, e.total_j) == pytest.approx((1.706, 0.001, 1.707))
    model = EnergyMeter(ModelPower(idle_w=2.0, stage_w={"little": 6.0}, j_per_byte=1e-6))
    e = model.frame_energy(0.0, 0.010, {"little": 5.0}, bytes_up=2000)
    assert (e.compute_j, e.radio_j) == pytest.approx((0.030 + 0.010, 0.002))


def test_model_needs_no_sampler() -> None:
    meter = EnergyMeter(ModelPower(idle_w=2.0)).start(0.01)
    assert meter._thread is None and meter.status() == {"source": "model", "description": meter.reader.description}
    meter.stop()


class _Mode:
    name, id = "15W", 0


class _Jtop:
    """The attributes jtop 4.x's client object has, as read on an Orin Nano
    (jtop itself needs its service, which cannot run here)."""

    nvpmodel = _Mode()
    jetson_clocks = False
    cpu = {"total": {}, "cpu": [{"online": True, "freq": {"cur": 1510400, "min": 115200, "max": 1510400}},
                                {"online": False, "freq": {"cur": 0}},
                                {"online": True, "freq": {"cur": 729600, "min": 115200, "max": 1510400}}]}
    gpu = {"ga10b": {"type": "integrated", "freq": {"governor": "nvhost_podgov", "cur": 624750, "max": 624750}}}


def test_board_state_from_jtop() -> None:
    from jetsplit.edge.power import describe_board, jtop_board_state

    state = jtop_board_state(_Jtop())
    assert state == {"nvpmodel": "15W", "nvpmodel_id": 0, "jetson_clocks": False,
                     "cpu_mhz": [1510.4, 729.6], "gpu_mhz": {"ga10b": 624.8}}
    assert describe_board(state) == "nvpmodel 15W (id 0), jetson_clocks off, CPU 729.6-1510.4 MHz, GPU ga10b 624.8 MHz"
    assert "unknown" in describe_board({})
    # A board without nvpmodel (jtop raises) and odd values: left out, not guessed.

    class Odd:
        @property
        def nvpmodel(self) -> None:
            raise RuntimeError("no nvpmodel on this board")

        cpu = {"cpu": [{"freq": "n/a"}]}

    assert jtop_board_state(Odd()) == {}


def test_power_config_interval_and_average() -> None:
    cfg = PowerConfig.from_table({"interval_ms": 20, "average_s": 2})
    assert (cfg.interval_ms, cfg.average_s) == (20.0, 2.0)
    with pytest.raises(ConfigError, match=r"\[power\].interval_ms"):
        PowerConfig.from_table({"interval_ms": 0})
