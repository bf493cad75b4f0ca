"""Shared fixtures: tiny real ONNX models and bundles built from them.

The tiny models are linear classifiers over scikit-learn's 8x8 digits with weights
fitted by least squares, so they are small enough to build in milliseconds and
still give real, mostly-right answers on real data.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from jetsplit.bundle import Bundle, write_bundle
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.worker import Worker
from jetsplit.datasets import load_dataset

DIGITS_INPUT: dict[str, Any] = {
    "height": 8, "width": 8, "colour": "gray", "layout": "nchw", "dtype": "float32",
    "scale": 1.0 / 255.0, "mean": [0.0], "std": [1.0], "interpolation": "area",
}


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _fit(features: np.ndarray, labels: np.ndarray, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
    y = np.eye(10)[labels]
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    # Least squares aims at one-hot targets; scale so the softmax is as peaked as
    # a trained classifier's and the gates see a spread of margins.
    w = w * 12.0
    return w[:-1].astype(np.float32), w[-1].astype(np.float32)


def build_tiny_models(out: Path) -> dict[str, Path]:
    """little (linear, 8x8 -> 10), head (8x8 -> 16 relu features + exit), tail (16 -> 10)."""
    data = load_dataset("digits", "train")
    x = data.images.reshape(len(data), 64).astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    w_lin, b_lin = _fit(x, data.labels, ridge=10.0)
    # A strong little model would leave nothing to offload: add heavy ridge.
    w_little, b_little = _fit(x, data.labels, ridge=300.0)
    proj = rng.normal(0, 1.0, (64, 32)).astype(np.float32)
    hidden = np.maximum(x @ proj, 0)
    w_tail, b_tail = _fit(hidden, data.labels, ridge=1.0)
    w_exit, b_exit = _fit(hidden[:, :8], data.labels, ridge=50.0)
    w_exit_full = np.zeros((32, 10), np.float32)
    w_exit_full[:8] = w_exit

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])
    act_in = helper.make_tensor_value_info("act", TensorProto.FLOAT, ["N", 32])
    paths: dict[str, Path] = {}

    def linear(name: str, w: np.ndarray, b: np.ndarray, src: str, dst: str) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
        inits = [numpy_helper.from_array(w, f"{name}_w"), numpy_helper.from_array(b, f"{name}_b")]
        return [helper.make_node("Gemm", [src, f"{name}_w", f"{name}_b"], [dst])], inits

    flat = helper.make_node("Flatten", ["image"], ["flat"], axis=1)
    for name, (w, b) in {"little": (w_little, b_little), "linear": (w_lin, b_lin)}.items():
        nodes, inits = linear(name, w, b, "flat", "logits")
        paths[name] = _save(helper.make_graph([flat, *nodes], name, [image], [logits], inits), out / f"{name}.onnx")

    n1, i1 = linear("proj", proj, np.zeros(32, np.float32), "flat", "pre")
    relu = helper.make_node("Relu", ["pre"], ["act"])
    n2, i2 = linear("exit", w_exit_full, b_exit, "act", "exit_logits")
    outs = [
        helper.make_tensor_value_info("act", TensorProto.FLOAT, ["N", 32]),
        helper.make_tensor_value_info("exit_logits", TensorProto.FLOAT, ["N", 10]),
    ]
    paths["head"] = _save(helper.make_graph([flat, *n1, relu, *n2], "head", [image], outs, i1 + i2), out / "head.onnx")
    n3, i3 = linear("tail", w_tail, b_tail, "act", "logits")
    paths["tail"] = _save(helper.make_graph(n3, "tail", [act_in], [logits], i3), out / "tail.onnx")
    return paths


def tiny_manifest(mode: str) -> dict[str, Any]:
    labels = {"names": [str(i) for i in range(10)]}
    if mode == "little-big":
        stages = [
            {"name": "little", "model": "little.onnx", "where": "edge", "input": "frame", "flops": 1280,
             "gate": {"kind": "margin", "threshold": 0.3}},
            {"name": "big", "model": "linear.onnx", "where": "cloud", "input": "frame", "flops": 1280},
        ]
    elif mode == "split":
        stages = [
            {"name": "head", "model": "head.onnx", "where": "edge", "input": "frame", "scores": "exit_logits",
             "carry": "act", "features": "act", "flops": 4096, "gate": {"kind": "maxprob", "threshold": 0.5}},
            {"name": "tail", "model": "tail.onnx", "where": "cloud", "input": "carry", "flops": 640},
        ]
    elif mode == "ensemble":
        stages = [
            {"name": f"m{i}", "model": m, "where": "edge" if i == 0 else "cloud", "input": "frame",
             "combine": "average", "flops": 1280, **({"gate": {"kind": "margin", "threshold": 0.4}} if i < 2 else {})}
            for i, m in enumerate(["little.onnx", "linear.onnx", "little.onnx"])
        ]
    else:
        raise ValueError(mode)
    return {"schema": 1, "name": f"tiny-{mode}", "mode": mode, "input": dict(DIGITS_INPUT),
            "labels": labels, "wire": {"activation": "f16", "frame": "raw"}, "stage": stages}


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture
def make_bundle(tmp_path: Path, tiny_models: dict[str, Path]) -> Any:
    """make_bundle(mode, edit=None) -> Bundle in a fresh directory."""

    def make(mode: str, edit: Any = None, name: str = "bundle") -> Bundle:
        manifest = tiny_manifest(mode)
        if edit is not None:
            edit(manifest)
        files = {p.name: p for p in tiny_models.values()}
        used = {s["model"] for s in manifest["stage"]}
        return write_bundle(tmp_path / name, manifest, {k: v for k, v in files.items() if k in used})

    return make


def edge_offloads(bundle: Bundle, n: int) -> tuple[int, list[dict[str, np.ndarray]], np.ndarray]:
    """Run the edge's stages on the first ``n`` test digits with every frame
    offloaded; return the stage the cloud resumes at, each frame's hand-off
    tensors (what the agent sends), and the frames. Also used by bench/scaleout.py."""
    from jetsplit.cloud.loadgen import offload_sample

    return offload_sample(bundle, n)


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
