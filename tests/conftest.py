"""Shared fixtures: tiny real ONNX models and bundles built from them
(tests/support/tiny.py), a worker in a thread, Jetson power trees in sysfs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from jetsplit.bundle import Bundle
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.worker import Worker
from tests.support.tiny import build_tiny_models, edge_offloads, tiny_bundle


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def make_bundle(tmp_path: Path, tiny_models: dict[str, Path]) -> Any:
    """make_bundle(mode, edit=None) -> Bundle in a fresh directory."""

    def make(mode: str, edit: Any = None, name: str = "bundle") -> Bundle:
        return tiny_bundle(tmp_path / name, mode, tiny_models, edit)

    return make


@pytest.fixture
def offloads() -> Callable[[Bundle, int], tuple[int, list[dict[str, np.ndarray]], np.ndarray]]:
    """:func:`edge_offloads`: offloads(bundle, n) -> (stage, tensors, frames)."""
    return edge_offloads


@pytest.fixture
def worker_thread(tmp_path: Path) -> Iterator[Any]:
    """worker_thread(*bundles, endpoint=None, **config) -> a real Worker serving
    on ``ipc://`` in a thread of this process (stopped and drained at teardown)."""
    running: list[tuple[threading.Event, threading.Thread]] = []

    def start(*bundles: Bundle, endpoint: str | None = None, **config: Any) -> Worker:
        ep = endpoint or f"ipc://{tmp_path}/worker{len(running)}.sock"
        worker = Worker(CloudConfig(bind=(ep,), bundles=tuple(str(b.root) for b in bundles), **config))
        worker.start()
        stop = threading.Event()
        thread = threading.Thread(target=worker.serve, args=(stop,), daemon=True)
        thread.start()
        running.append((stop, thread))
        return worker

    yield start
    for stop, thread in running:
        stop.set()
        thread.join(10)


# -- Jetson power monitors in sysfs ---------------------------------------------
# Trees laid out as on the boards (file names, units, symlinks), for the power
# readers and ``jetsplit power``.


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _orin_nano(root: Path) -> None:
    """/sys/bus/i2c/drivers/ina3221/1-0040 on an Orin Nano/NX (JetPack 6): the
    mainline hwmon driver; mV and mA; in7 is the sum of shunt voltages. On the
    board devices/1-0040 is a symlink to the same device."""
    dev = root / "bus/i2c/drivers/ina3221/1-0040"
    _write(dev / "name", "ina3221")
    _write(dev / "uevent", "DRIVER=ina3221\nOF_NAME=ina3221")
    hw = dev / "hwmon/hwmon1"
    _write(hw / "name", "ina3221")
    for n, (label, mv, ma) in enumerate([("VDD_IN", 5072, 1248), ("VDD_CPU_GPU_CV", 5064, 296), ("VDD_SOC", 5064, 392)], 1):
        _write(hw / f"in{n}_label", label)
        _write(hw / f"in{n}_input", str(mv))
        _write(hw / f"curr{n}_input", str(ma))
        _write(hw / f"in{n}_enable", "1")
        _write(hw / f"curr{n}_max", "32760")
        _write(hw / f"shunt{n}_resistor", "5000")
        _write(hw / f"in{n + 3}_input", "6240")  # shunt voltages, uV: not rails
    _write(hw / "in7_label", "sum of shunt voltages")
    _write(hw / "in7_input", "9680")
    (root / "bus/i2c/devices").mkdir(parents=True, exist_ok=True)
    (root / "bus/i2c/devices/1-0040").symlink_to(dev)


def _agx_orin(root: Path) -> None:
    """AGX Orin: two monitors, the second with NC (not connected) channels."""
    for dev_name, chans in {
        "1-0040": [("VDD_GPU_SOC", 19968, 680), ("VDD_CPU_CV", 19968, 160), ("VIN_SYS_5V0", 5048, 608)],
        "1-0041": [("NC", 0, 0), ("VDDQ_VDD2_1V8AO", 5040, 184), ("NC", 0, 0)],
    }.items():
        dev = root / f"bus/i2c/drivers/ina3221/{dev_name}"
        _write(dev / "name", "ina3221")
        hw = dev / ("hwmon/hwmon2" if dev_name == "1-0040" else "hwmon/hwmon3")
        for n, (label, mv, ma) in enumerate(chans, 1):
            _write(hw / f"in{n}_label", label)
            _write(hw / f"in{n}_input", str(mv))
            _write(hw / f"curr{n}_input", str(ma))


def _nano(root: Path) -> None:
    """Jetson Nano (JetPack 4): NVIDIA's ina3221x IIO driver; power in mW."""
    iio = root / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    _write(iio.parent / "name", "ina3221x")
    for n, (label, mw, mv, ma) in enumerate([("POM_5V_IN", 3412, 5008, 680), ("POM_5V_GPU", 80, 5008, 16), ("POM_5V_CPU", 802, 5008, 160)]):
        _write(iio / f"rail_name_{n}", label)
        _write(iio / f"in_power{n}_input", str(mw))
        _write(iio / f"in_voltage{n}_input", str(mv))
        _write(iio / f"in_current{n}_input", str(ma))
        _write(iio / f"crit_current_limit_{n}", "32760 ma")


JETSON_BOARDS: dict[str, Callable[[Path], None]] = {"orin-nano": _orin_nano, "agx-orin": _agx_orin, "nano": _nano}


@pytest.fixture
def jetson_sysfs(tmp_path: Path) -> Callable[..., Path]:
    """jetson_sysfs(board, root=tmp_path) -> root, with ``board``'s INA3221
    monitors written under ``root/bus/i2c`` (boards: orin-nano, agx-orin, nano)."""

    def make(board: str, root: Path | None = None) -> Path:
        root = tmp_path if root is None else root
        JETSON_BOARDS[board](root)
        return root

    return make
