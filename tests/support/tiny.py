"""Tiny real ONNX models, bundles made of them, and the edge's hand-off tensors.

The tiny models are linear classifiers over scikit-learn's 8x8 digits with weights
fitted by least squares, so they are small enough to build in milliseconds and
still give real, mostly-right answers on real data. The tests' fixtures
(tests/conftest.py) and bench/scaleout.py build them the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from jetsplit.bundle import Bundle, write_bundle
from jetsplit.datasets import load_dataset

__all__ = ["DIGITS_INPUT", "build_tiny_models", "edge_offloads", "tiny_bundle", "tiny_manifest"]

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


def tiny_bundle(out: Path, mode: str, models: dict[str, Path] | None = None, edit: Any = None) -> Bundle:
    """The ``mode`` bundle of tiny models written to ``out`` (models built under
    ``out``/../models unless given); ``edit(manifest)`` may change it first."""
    if models is None:
        (out.parent / "models").mkdir(parents=True, exist_ok=True)
        models = build_tiny_models(out.parent / "models")
    manifest = tiny_manifest(mode)
    if edit is not None:
        edit(manifest)
    files = {p.name: p for p in models.values()}
    used = {s["model"] for s in manifest["stage"]}
    return write_bundle(out, manifest, {k: v for k, v in files.items() if k in used})


def edge_offloads(bundle: Bundle, n: int) -> tuple[int, list[dict[str, np.ndarray]], np.ndarray]:
    """Run the edge's stages on the first ``n`` test digits with every frame
    offloaded; return the stage the cloud resumes at, each frame's hand-off
    tensors (what the agent sends), and the frames (the load generator's
    :func:`~jetsplit.cloud.loadgen.offload_sample`)."""
    from jetsplit.cloud.loadgen import offload_sample

    return offload_sample(bundle, n)
