"""Training learned gates, and writing them into the ONNX graph.

- **d-gate** (Shafiee et al.): a linear one-vs-rest classifier on pooled features,
  trained with a hinge loss (scikit-learn ``LinearSVC``). Its score is the largest
  signed distance to a class hyperplane, its class the argmax: the layout of
  :class:`jetsplit.gates.DGate` (``weight`` (C, D), ``bias`` (C,), ``mean``,
  ``scale``).
- **support gate** (DL-gleaning's support network): a small classifier of
  *whether the exit is right*, from :func:`jetsplit.gates.support_inputs` (sorted
  probabilities, their log ratios, margin, entropy, optionally pooled features and
  the carried activation's statistics); ``LogisticRegression`` by default, an
  ``MLPClassifier`` with one hidden layer when ``hidden > 0``. Layout of
  :class:`jetsplit.gates.SupportGate` (``w0, b0, w1, b1, ...``, ``use_features``,
  ``mean``, ``scale``).

:func:`add_gate_output` writes the same computation into the stage's ONNX graph as
an extra output ``gate_score``, so an engine that runs the whole head on the
device GPU (TensorRT) also computes the gate there; the numpy gate stays the
reference the chain evaluates, and the two agree to 1e-5.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from jetsplit.errors import DataError, EngineError
from jetsplit.gates import SUPPORT_TOP_K, pool_features, support_inputs

from .exits import MAX_IR_VERSION, NODE_PREFIX, opset_of, pool_nodes

__all__ = ["GATE_OUTPUT", "add_gate_output", "save_params", "train_dgate", "train_support"]

GATE_OUTPUT = "gate_score"
_P = NODE_PREFIX + "gate/"


def _standardise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    return (x - mean) / scale, mean.astype(np.float32), scale.astype(np.float32)


def train_dgate(features: np.ndarray, labels: np.ndarray, num_classes: int,
                c: float = 0.1, seed: int = 0) -> dict[str, np.ndarray]:
    """Hinge-loss linear gate on pooled ``features`` -> DGate parameters."""
    from sklearn.svm import LinearSVC

    f = pool_features(features).astype(np.float64)
    z, mean, scale = _standardise(f)
    classes = np.unique(labels)
    if len(classes) < 2:
        raise DataError("d-gate: the training split has fewer than 2 classes")
    svm = LinearSVC(C=c, loss="hinge", dual=True, max_iter=5000, random_state=seed)
    svm.fit(z, labels)
    coef = np.asarray(svm.coef_, np.float64)
    inter = np.asarray(svm.intercept_, np.float64)
    if coef.shape[0] == 1:  # binary: one hyperplane, its mirror for the other class
        coef, inter = np.concatenate([-coef, coef]), np.concatenate([-inter, inter])
    weight = np.zeros((num_classes, f.shape[1]))
    # A class absent from training gets a far-away hyperplane: never the argmax.
    weight[:, 0] = 1e-3
    bias = np.full(num_classes, -1e3)
    for row, cls in enumerate(classes):
        weight[int(cls)], bias[int(cls)] = coef[row], inter[row]
    return {"weight": weight.astype(np.float32), "bias": bias.astype(np.float32), "mean": mean, "scale": scale}


def train_support(probs: np.ndarray, correct: np.ndarray, features: np.ndarray | None = None,
                  hidden: int = 0, seed: int = 0, carry: np.ndarray | None = None,
                  c: float = 0.01) -> dict[str, np.ndarray]:
    """Classifier of P(exit is right) -> SupportGate parameters (input layout 2).

    ``hidden=0`` (the default): an L2-regularised logistic regression (``C=c``).
    The exit is right on ~98-99% of the train split, so an MLP with early stopping
    held out one or two wrong answers and stopped near its initial weights: the
    gate that ranked worse than chance on the demo zoo (threshold infinite, 100%
    offload). A strong prior on few weights ranks by the margin and logit gaps and
    bends where the features say the exit is unsure.
    """
    x = support_inputs(probs, features, carry).astype(np.float64)
    y = np.asarray(correct, bool).astype(np.int64)
    if y.min() == y.max():
        raise DataError(
            f"support gate: the exit is {'right' if y[0] else 'wrong'} on every training sample, "
            "so there is nothing to learn; use a margin gate or more data"
        )
    z, mean, scale = _standardise(x)
    layers: list[tuple[np.ndarray, np.ndarray]]
    if hidden <= 0:
        from sklearn.linear_model import LogisticRegression

        lr = LogisticRegression(C=c, max_iter=5000)
        lr.fit(z, y)
        layers = [(lr.coef_.T.astype(np.float32), lr.intercept_.astype(np.float32))]
    else:
        from sklearn.neural_network import MLPClassifier

        mlp = MLPClassifier(hidden_layer_sizes=(hidden,), alpha=1.0 / max(c, 1e-6) * 1e-3, max_iter=2000,
                            random_state=seed)
        mlp.fit(z, y)
        layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(mlp.coefs_, mlp.intercepts_)]
    out: dict[str, np.ndarray] = {"use_features": np.array(int(features is not None)),
                                  "use_carry": np.array(int(carry is not None)), "layout": np.array(2),
                                  "mean": mean, "scale": scale}
    for i, (w, b) in enumerate(layers):
        out[f"w{i}"], out[f"b{i}"] = w, b
    return out


def save_params(params: dict[str, np.ndarray], path: Path) -> Path:
    """Write gate parameters as an ``.npz`` (no pickle)."""
    with open(path, "wb") as fh:
        np.savez(fh, **params)  # type: ignore[arg-type]
    return path


# -- in-graph gates ---------------------------------------------------------------------


class _Builder:
    """Appends named nodes and constants to a graph."""

    def __init__(self, graph: onnx.GraphProto, opset: int) -> None:
        self.graph, self.opset, self.count = graph, opset, 0

    def const(self, name: str, value: np.ndarray) -> str:
        full = _P + name
        self.graph.initializer.append(numpy_helper.from_array(value, full))
        return full

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs: Any) -> str:
        self.count += 1
        name = out or f"{_P}{op_type.lower()}_{self.count}"
        self.graph.node.append(helper.make_node(op_type, inputs, [name], name=f"{_P}{op_type}_{self.count}", **attrs))
        return name

    def reduce(self, op_type: str, x: str, axis: int, keepdims: int, out: str | None = None) -> str:
        # Opset 18 moved the axes of ReduceMax/ReduceSum from an attribute to an input.
        if self.opset >= 18 or op_type == "ReduceSum":
            axes = self.const(f"axes_{self.count}", np.array([axis], np.int64))
            return self.op(op_type, [x, axes], out, keepdims=keepdims)
        return self.op(op_type, [x], out, axes=[axis], keepdims=keepdims)


def _features(b: _Builder, model: ModelProto, tensor: str) -> str:
    rank = _rank(model, tensor)
    if rank <= 2:
        return tensor
    pooled = _P + "pooled"
    b.graph.node.extend(pool_nodes(tensor, rank, pooled))
    return pooled


def _rank(model: ModelProto, tensor: str) -> int:
    for vi in list(model.graph.output) + list(model.graph.value_info) + list(model.graph.input):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    inferred = onnx.shape_inference.infer_shapes(model)
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name == tensor and vi.type.tensor_type.HasField("shape"):
            return len(vi.type.tensor_type.shape.dim)
    raise EngineError(f"gate in graph: cannot tell the rank of {tensor!r}")


def add_gate_output(model: ModelProto, kind: str, params: dict[str, np.ndarray], scores: str,
                    scores_kind: str = "logits", features: str | None = None,
                    num_classes: int | None = None) -> ModelProto:
    """A copy of ``model`` with an extra output ``gate_score`` (B,) computed as the
    numpy gate of ``kind`` computes it from this stage's own scores and features.

    Only valid where the gate reads this stage's own probabilities (the first stage,
    or ``combine = "replace"``): an ensemble gate after averaging depends on stages
    the graph does not see.
    """
    out = ModelProto()
    out.CopyFrom(model)
    b = _Builder(out.graph, opset_of(out))
    if kind == "dgate":
        if features is None:
            raise EngineError("dgate in graph: the stage has no features tensor")
        f = _features(b, out, features)
        w = params["weight"].astype(np.float32)
        if "mean" in params and "scale" in params:
            f = b.op("Div", [b.op("Sub", [f, b.const("mean", params["mean"].astype(np.float32))]),
                             b.const("scale", params["scale"].astype(np.float32))])
        z = b.op("Gemm", [f, b.const("weight", w), b.const("bias", params["bias"].astype(np.float32))], transB=1)
        norms = np.linalg.norm(w, axis=1).clip(1e-12).astype(np.float32)
        dist = b.op("Div", [z, b.const("norms", norms)])
        b.reduce("ReduceMax", dist, 1, 0, GATE_OUTPUT)
    elif kind == "support":
        c = num_classes or int(_dim(out, scores))
        probs = b.op("Softmax", [scores], axis=1) if scores_kind == "logits" else scores
        layout = int(params.get("layout", np.array(1)).item())
        if int(params.get("use_carry", np.array(0)).item()):
            raise EngineError("support gate in graph: a gate on the carried activation's statistics stays in numpy")
        k = b.const("k", np.array([c if layout == 1 else min(c, SUPPORT_TOP_K)], np.int64))
        sorted_p = _P + "sorted"
        out.graph.node.append(helper.make_node("TopK", [probs, k], [sorted_p, _P + "sorted_idx"], axis=1, largest=1,
                                     sorted=1, name=_P + "TopK"))
        ax = b.const("ax1", np.array([1], np.int64))
        first = b.op("Slice", [sorted_p, b.const("s0", np.array([0], np.int64)), b.const("e1", np.array([1], np.int64)), ax])
        second = b.op("Slice", [sorted_p, b.const("s1", np.array([1], np.int64)), b.const("e2", np.array([2], np.int64)), ax])
        margin = b.op("Sub", [first, second])
        clipped = b.op("Clip", [probs, b.const("lo", np.array(1e-12, np.float32)), b.const("hi", np.array(1.0, np.float32))])
        plogp = b.op("Mul", [clipped, b.op("Log", [clipped])])
        h = b.reduce("ReduceSum", plogp, 1, 1)  # = -H
        ent = b.op("Add", [b.const("one", np.array(1.0, np.float32)),
                           b.op("Div", [h, b.const("logc", np.array(math.log(c), np.float32))])])
        cols = [sorted_p]
        if layout != 1:
            floor = b.const("floor", np.array(1e-30, np.float32))
            logs = b.op("Log", [b.op("Max", [sorted_p, floor])])
            kk = min(c, SUPPORT_TOP_K)
            rest = b.op("Slice", [logs, b.const("s1b", np.array([1], np.int64)), b.const("ek", np.array([kk], np.int64)), ax])
            head = b.op("Slice", [logs, b.const("s0b", np.array([0], np.int64)), b.const("e1b", np.array([1], np.int64)), ax])
            cols.append(b.op("Sub", [rest, head]))
        cols += [margin, ent]
        if int(params.get("use_features", np.array(0)).item()):
            if features is None:
                raise EngineError("support gate in graph: the gate reads features but the stage has none")
            cols.append(_features(b, out, features))
        x = b.op("Concat", cols, axis=1)
        if "mean" in params and "scale" in params:
            x = b.op("Div", [b.op("Sub", [x, b.const("mean", params["mean"].astype(np.float32))]),
                             b.const("scale", params["scale"].astype(np.float32))])
        i = 0
        while f"w{i}" in params:
            x = b.op("Add", [b.op("MatMul", [x, b.const(f"w{i}", params[f"w{i}"].astype(np.float32))]),
                             b.const(f"b{i}", params[f"b{i}"].astype(np.float32))])
            if f"w{i + 1}" in params:
                x = b.op("Relu", [x])
            i += 1
        sig = b.op("Sigmoid", [x])
        b.op("Reshape", [sig, b.const("flat", np.array([-1], np.int64))], GATE_OUTPUT)
    else:
        raise EngineError(f"gate in graph: only learned gates (dgate, support) are written, got {kind!r}")
    batch = _batch_dim(out, scores)
    out.graph.output.append(helper.make_tensor_value_info(GATE_OUTPUT, TensorProto.FLOAT, [batch]))
    out.ir_version = min(out.ir_version or MAX_IR_VERSION, MAX_IR_VERSION)
    onnx.checker.check_model(out)
    return out


def _dim(model: ModelProto, tensor: str) -> int:
    for vi in model.graph.output:
        if vi.name == tensor:
            return int(vi.type.tensor_type.shape.dim[-1].dim_value)
    raise EngineError(f"gate in graph: {tensor!r} is not an output of the model")


def _batch_dim(model: ModelProto, tensor: str) -> str | int:
    for vi in model.graph.output:
        if vi.name == tensor and vi.type.tensor_type.shape.dim:
            d = vi.type.tensor_type.shape.dim[0]
            if d.HasField("dim_value"):
                return int(d.dim_value)
            return d.dim_param or "batch"
    return "batch"
