"""Exit heads: a cheap classifier appended at a cut, so the edge can answer early.

An exit is global average pooling of the cut activation followed by one linear
layer (DL-gleaning's middle outputs, BranchyNet's branches, at their cheapest).
It is fitted with scikit-learn's ``LogisticRegression`` (a cross-entropy linear
model) on pooled features of the *train* split, so the calibration split that
tunes the thresholds stays unseen by every learned part.

The head graph returned by :func:`add_exit` has three outputs, in this order:

- the cut tensor itself (what the edge carries to the cloud's tail),
- ``<prefix>_logits``: the exit's class scores,
- ``<prefix>_feat``: the pooled features (what d-gates and support gates read).

    >>> exit_ = build_exit(head_path, "act", train_x, train_y, 10, "head_exit.onnx")  # doctest: +SKIP
    >>> exit_.outputs
    ('act', 'exit_logits', 'exit_feat')

Every node the exit adds is named under ``jetsplit_exit/`` so quantization can
leave the small exit in float (it costs nothing and keeps the scores that the
gates threshold unshifted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from jetsplit.engines import open_engine
from jetsplit.errors import DataError, EngineError
from jetsplit.gates import pool_features

__all__ = [
    "NODE_PREFIX",
    "ExitHead",
    "add_exit",
    "build_exit",
    "fit_linear_exit",
    "opset_of",
    "pool_nodes",
    "run_batched",
]

NODE_PREFIX = "jetsplit_exit/"
# ONNX Runtime 1.31 refuses the IR version 14 that onnx 1.23 writes by default.
MAX_IR_VERSION = 10
_BATCH = 256


@dataclass(frozen=True)
class ExitHead:
    """A head with an exit: where it was written and its three output names."""

    path: Path
    carry: str
    scores: str
    features: str
    train_accuracy: float
    feature_dim: int

    @property
    def outputs(self) -> tuple[str, str, str]:
        return (self.carry, self.scores, self.features)


def opset_of(model: ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 17


def run_batched(model: Path, feeds: np.ndarray, outputs: list[str] | None = None,
                input_name: str | None = None, batch: int = _BATCH) -> Iterator[dict[str, np.ndarray]]:
    """Run ``model`` over ``feeds`` in batches (bounded memory on big splits)."""
    with open_engine(model) as eng:
        name = input_name or eng.inputs[0].name
        for lo in range(0, len(feeds), batch):
            out = eng.infer({name: feeds[lo : lo + batch]})
            yield out if outputs is None else {k: out[k] for k in outputs}


def pool_nodes(tensor: str, rank: int, out: str) -> list[onnx.NodeProto]:
    """Nodes computing :func:`jetsplit.gates.pool_features` of ``tensor`` into ``out``."""
    if rank > 2:
        # GlobalAveragePool averages every axis after the second, as pool_features does.
        return [
            helper.make_node("GlobalAveragePool", [tensor], [out + "_gap"], name=NODE_PREFIX + out + "/gap"),
            helper.make_node("Flatten", [out + "_gap"], [out], axis=1, name=NODE_PREFIX + out + "/flatten"),
        ]
    return [helper.make_node("Identity", [tensor], [out], name=NODE_PREFIX + out + "/identity")]


def fit_linear_exit(features: np.ndarray, labels: np.ndarray, num_classes: int,
                    c: float = 1.0) -> tuple[np.ndarray, np.ndarray, float]:
    """Cross-entropy linear classifier on pooled features -> (weight (C, D), bias (C,), train accuracy).

    The features are standardised for the fit and the standardisation is folded
    into the weights, so the graph needs one Gemm.
    """
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(labels)) < 2:
        raise DataError("exit head: the training split has fewer than 2 classes")
    mean = features.mean(axis=0)
    scale = features.std(axis=0)
    scale = np.where(scale > 1e-6, scale, 1.0)
    z = (features - mean) / scale
    clf = LogisticRegression(C=c, max_iter=500)
    clf.fit(z, labels)
    coef = np.asarray(clf.coef_, np.float64)
    inter = np.asarray(clf.intercept_, np.float64)
    if coef.shape[0] == 1:  # binary: sklearn keeps one row for class 1
        coef = np.concatenate([-coef / 2, coef / 2])
        inter = np.concatenate([-inter / 2, inter / 2])
    weight = np.zeros((num_classes, features.shape[1]))
    bias = np.full(num_classes, -30.0)  # a class absent from train is never predicted
    for row, cls in enumerate(clf.classes_):
        weight[int(cls)] = coef[row] / scale
        bias[int(cls)] = inter[row] - float(coef[row] @ (mean / scale))
    acc = float(((features @ weight.T + bias).argmax(axis=1) == labels).mean())
    return weight.astype(np.float32), bias.astype(np.float32), acc


def add_exit(head: ModelProto, cut: str, weight: np.ndarray, bias: np.ndarray,
             prefix: str = "exit", carry: str | None = None) -> ModelProto:
    """A copy of ``head`` (whose outputs include ``cut``) with an exit at ``cut``.

    ``carry`` is the output the head keeps for the next stage (default ``cut``; a
    packed multi-tensor cut pools its first tensor and carries the packed one)."""
    model = ModelProto()
    model.CopyFrom(head)
    graph = model.graph
    outs = {o.name: o for o in graph.output}
    if cut not in outs:
        raise EngineError(f"add_exit: {cut!r} is not an output of the head (outputs: {sorted(outs)})")
    if (carry or cut) not in outs:
        raise EngineError(f"add_exit: {carry!r} is not an output of the head (outputs: {sorted(outs)})")
    carry_vi = outs[carry or cut]
    rank = len(outs[cut].type.tensor_type.shape.dim)
    feat, logits = f"{prefix}_feat", f"{prefix}_logits"
    taken = {o for n in graph.node for o in n.output} | {i.name for i in graph.input}
    for name in (feat, logits):
        if name in taken:
            raise EngineError(f"add_exit: the head already has a tensor named {name!r}; choose another prefix")
    nodes = pool_nodes(cut, rank, feat)
    w_name, b_name = NODE_PREFIX + prefix + "/weight", NODE_PREFIX + prefix + "/bias"
    graph.initializer.extend([numpy_helper.from_array(weight.astype(np.float32), w_name),
                              numpy_helper.from_array(bias.astype(np.float32), b_name)])
    nodes.append(helper.make_node("Gemm", [feat, w_name, b_name], [logits], transB=1, name=NODE_PREFIX + prefix + "/gemm"))
    graph.node.extend(nodes)
    batch = carry_vi.type.tensor_type.shape.dim[0] if rank else None
    batch_dim: str | int = "batch"
    if batch is not None and batch.HasField("dim_param"):
        batch_dim = batch.dim_param
    elif batch is not None and batch.HasField("dim_value"):
        batch_dim = batch.dim_value
    del graph.output[:]
    graph.output.extend([
        carry_vi,
        helper.make_tensor_value_info(logits, TensorProto.FLOAT, [batch_dim, weight.shape[0]]),
        helper.make_tensor_value_info(feat, TensorProto.FLOAT, [batch_dim, weight.shape[1]]),
    ])
    model.ir_version = min(model.ir_version or MAX_IR_VERSION, MAX_IR_VERSION)
    onnx.checker.check_model(model)
    return model


def build_exit(head_path: Path, cut: str, train_x: np.ndarray, train_y: np.ndarray,
               num_classes: int, out_path: Path, prefix: str = "exit",
               input_name: str | None = None, carry: str | None = None,
               external: bool = False) -> ExitHead:
    """Fit an exit at ``cut`` of the head model on (preprocessed) train inputs and
    write head+exit to ``out_path`` (weights in ``<file>.data`` with ``external``);
    checked with ONNX Runtime against numpy. ``carry``: see :func:`add_exit`."""
    from .modelfile import save_model

    pooled = np.concatenate([pool_features(o[cut]) for o in run_batched(head_path, train_x, [cut], input_name)])
    weight, bias, acc = fit_linear_exit(pooled.astype(np.float64), train_y, num_classes)
    model = add_exit(onnx.load(str(head_path)), cut, weight, bias, prefix, carry)
    save_model(model, out_path, external=external)
    # Verify in ONNX Runtime: the graph's pooled features and logits are numpy's.
    probe = train_x[: min(len(train_x), 16)]
    got = next(run_batched(out_path, probe, None, input_name))
    # A packed cut carries another tensor than it pools: check the pooled features
    # against numpy's where the cut tensor is an output, the logits everywhere.
    want_feat = pool_features(got[cut]) if cut in got else got[f"{prefix}_feat"]
    want_logits = want_feat @ weight.T + bias
    err = max(float(np.abs(got[f"{prefix}_feat"] - want_feat).max()),
              float(np.abs(got[f"{prefix}_logits"] - want_logits).max()))
    if not err <= 1e-3 * max(1.0, float(np.abs(want_logits).max())):
        raise EngineError(f"exit at {cut!r}: ONNX Runtime differs from numpy by {err:.3g}")
    return ExitHead(out_path, carry or cut, f"{prefix}_logits", f"{prefix}_feat", acc, int(weight.shape[1]))
