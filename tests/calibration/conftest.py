"""Small ONNX models built in place: a conv chain and a residual network.

Weights are random but seeded, so every run sees the same models; both are saved
with IR version 10 because ONNX Runtime 1.31 refuses onnx 1.23's default of 14.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper


def _conv(
    rng: np.random.Generator, name: str, x: str, y: str, cin: int, cout: int, stride: int = 1
):
    w = numpy_helper.from_array(
        (rng.standard_normal((cout, cin, 3, 3)) * (2.0 / (9 * cin)) ** 0.5).astype(np.float32),
        f"{name}_w",
    )
    b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"{name}_b")
    node = helper.make_node(
        "Conv", [x, w.name, b.name], [y], name=name, pads=[1, 1, 1, 1], strides=[stride, stride]
    )
    return node, [w, b]


def _head(rng: np.random.Generator, x: str, cin: int, classes: int = 10):
    w = numpy_helper.from_array(
        (rng.standard_normal((classes, cin)) * 0.3).astype(np.float32), "fc_w"
    )
    b = numpy_helper.from_array(np.zeros(classes, np.float32), "fc_b")
    nodes = [
        helper.make_node("GlobalAveragePool", [x], ["pool"], name="pool"),
        helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
    ]
    return nodes, [w, b]


def _save(nodes, inits, x_shape, path: Path, name: str) -> Path:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [x_shape[0], 10])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def build_chain(path: Path) -> Path:
    """x (N,3,32,32) -> conv-relu -> conv/2-relu -> conv-relu -> pool -> fc -> logits."""
    rng = np.random.default_rng(1)
    nodes, inits = [], []
    for i, (x, cin, cout, stride) in enumerate(
        [("x", 3, 8, 1), ("r0", 8, 16, 2), ("r1", 16, 16, 1)]
    ):
        node, ws = _conv(rng, f"conv{i}", x, f"c{i}", cin, cout, stride)
        nodes += [node, helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        inits += ws
    tail, ws = _head(rng, "r2", 16)
    return _save(nodes + tail, inits + ws, ["N", 3, 32, 32], path, "chain")


def build_residual(path: Path) -> Path:
    """A stem and two residual blocks, fixed batch 1, gray 28x28 input (MNIST-like)."""
    rng = np.random.default_rng(2)
    nodes, inits = [], []
    node, ws = _conv(rng, "stem", "x", "stem_c", 1, 8)
    nodes += [node, helper.make_node("Relu", ["stem_c"], ["b0_out"], name="stem_relu")]
    inits += ws
    for blk in (1, 2):
        src = f"b{blk - 1}_out"
        c1, w1 = _conv(rng, f"b{blk}_c1", src, f"b{blk}_conv1", 8, 8)
        c2, w2 = _conv(rng, f"b{blk}_c2", f"b{blk}_relu1", f"b{blk}_conv2", 8, 8)
        nodes += [
            c1,
            helper.make_node("Relu", [f"b{blk}_conv1"], [f"b{blk}_relu1"], name=f"b{blk}_r1"),
            c2,
            helper.make_node("Add", [f"b{blk}_conv2", src], [f"b{blk}_sum"], name=f"b{blk}_add"),
            helper.make_node("Relu", [f"b{blk}_sum"], [f"b{blk}_out"], name=f"b{blk}_relu"),
        ]
        inits += w1 + w2
    tail, ws = _head(rng, "b2_out", 8)
    return _save(nodes + tail, inits + ws, [1, 1, 28, 28], path, "residual")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def chain_model(model_dir: Path) -> Path:
    return build_chain(model_dir / "chain.onnx")


@pytest.fixture(scope="session")
def residual_model(model_dir: Path) -> Path:
    return build_residual(model_dir / "residual.onnx")
