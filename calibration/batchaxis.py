"""The batch axis of a user's model: named dynamic where provably safe, else batch 1.

Exporters often write a batch of 1 into the graph: a ``Reshape`` to the literal
``[1, 2048]`` before the classifier (ResNet-50 in the model zoo), ``[1, g, c/g, h,
w]`` around ShuffleNet's channel shuffles, or a ``Flatten`` on axis 0. Once the
graph inputs get a dynamic batch axis, such a node still says 1 and the model fails
(or, worse, mixes samples) at batch 2.

:func:`batch_dynamic` rewrites exactly the nodes whose polymorphic form is provably
the same per sample: a ``Reshape`` whose constant target starts with the literal 1
while its input's first axis is the batch (the target's 1 becomes 0, "copy the
input's batch"; with ``allowzero`` set, -1 when no other -1 is there), and a
``Flatten`` on axis 0 whose input's first axis is the batch (axis 1 gives the same
per-sample result). Rewrites are repeated with fresh shape inference, because one
rewritten Reshape is what makes the next one's input batched (ShuffleNet chains
33). Anything else that pins the batch stays; :func:`unbatched_outputs` then names
the outputs that lost it, and the caller runs that part at batch 1 and says so.

Shape inference works on a *skeleton* of the model (weights replaced by typed graph
inputs), so a 100 MB model infers in a fraction of the time the full one takes.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np
import onnx
from onnx import ModelProto, numpy_helper

from jetsplit.errors import EngineError

__all__ = ["batch_dynamic", "fix_batch", "infer_skeleton", "skeleton", "unbatched_outputs"]

# Initializers at most this many bytes stay in the skeleton (shape constants that
# shape inference reads the values of).
_KEEP_BYTES = 4096
# A chain of rewrites longer than this is not a batch-1 literal pattern.
_MAX_ROUNDS = 64


def skeleton(model: ModelProto) -> ModelProto:
    """``model`` without its large weights: each becomes a typed graph input.

    Node, input and output lists are copied (small); initializer data is not.
    """
    out = ModelProto()
    out.ir_version = max(model.ir_version, 4)
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    graph, src = out.graph, model.graph
    graph.name = src.name
    graph.node.extend(src.node)
    graph.output.extend(src.output)
    listed = {v.name for v in src.input}
    graph.input.extend(src.input)
    for tensor in src.initializer:
        if _nbytes(tensor) <= _KEEP_BYTES and tensor.data_location != onnx.TensorProto.EXTERNAL:
            graph.initializer.append(tensor)
        elif tensor.name not in listed:
            graph.input.append(
                onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
            )
    return out


def infer_skeleton(model: ModelProto, what: str) -> ModelProto:
    """Shape-inferred skeleton of ``model``; ``EngineError`` naming ``what`` if it fails."""
    try:
        return onnx.shape_inference.infer_shapes(skeleton(model), data_prop=True)
    except Exception as exc:  # shape inference raises its own untyped errors
        raise EngineError(f"{what}: shape inference failed: {exc}") from exc


def batch_dynamic(model: ModelProto, batch_dim: str, what: str) -> tuple[ModelProto, list[str]]:
    """``model`` (whose graph inputs already carry ``batch_dim``) with literal-batch
    Reshapes and Flattens made polymorphic; returns it and the rewritten node names.

    Changes ``model`` in place (callers pass a fresh copy) and returns it.
    """
    out = model
    rewritten: list[str] = []
    for _ in range(_MAX_ROUNDS):
        dims = _first_dims(infer_skeleton(out, what))
        changed = _rewrite_round(out, dims, batch_dim)
        if not changed:
            break
        rewritten.extend(changed)
    return out, rewritten


def unbatched_outputs(model: ModelProto, batch_dim: str, what: str) -> list[str]:
    """Graph outputs whose first axis is not ``batch_dim`` after shape inference."""
    light = skeleton(model)
    for value in light.graph.output:  # declared shapes would be kept: infer them afresh
        value.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception as exc:  # shape inference raises its own untyped errors
        raise EngineError(f"{what}: shape inference failed: {exc}") from exc
    dims = _first_dims(inferred)
    return [v.name for v in model.graph.output if dims.get(v.name) != batch_dim]


def fix_batch(model: ModelProto) -> ModelProto:
    """A copy of ``model`` whose graph inputs and outputs have a batch of exactly 1."""
    out = copy.deepcopy(model)
    inits = {t.name for t in out.graph.initializer}
    for value in [v for v in out.graph.input if v.name not in inits] + list(out.graph.output):
        shape = value.type.tensor_type.shape
        if value.type.tensor_type.HasField("shape") and len(shape.dim):
            shape.dim[0].Clear()
            shape.dim[0].dim_value = 1
    del out.graph.value_info[:]
    return out


# -- helpers -------------------------------------------------------------------


def _nbytes(tensor: onnx.TensorProto) -> int:
    if tensor.raw_data:
        return len(tensor.raw_data)
    return int(np.prod(tensor.dims)) * 8 if tensor.dims else 8


def _first_dims(model: ModelProto) -> dict[str, int | str | None]:
    """First-axis value (int, symbol, or None if unknown) of every typed tensor."""
    graph = model.graph
    out: dict[str, int | str | None] = {}
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape") or not tensor_type.shape.dim:
            continue
        dim = tensor_type.shape.dim[0]
        out[value.name] = (
            dim.dim_value if dim.HasField("dim_value") else dim.dim_param if dim.dim_param else None
        )
    return out


def _constants(model: ModelProto) -> dict[str, tuple[np.ndarray, str]]:
    """Constant int64 vectors by name: initializers and Constant nodes, with their kind."""
    found: dict[str, tuple[np.ndarray, str]] = {}
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.INT64 and len(tensor.dims) == 1:
            found[tensor.name] = (numpy_helper.to_array(tensor), "initializer")
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            value = numpy_helper.to_array(node.attribute[0].t)
            if value.dtype == np.int64 and value.ndim == 1:
                found[node.output[0]] = (value, "constant")
    return found


def _rewrite_round(model: ModelProto, dims: dict[str, int | str | None], batch: str) -> list[str]:
    consts = _constants(model)
    users = _use_count(model.graph.node)
    changed: list[str] = []
    for index, node in enumerate(model.graph.node):
        label = node.name or f"{node.op_type} #{index}"
        if not node.input or dims.get(node.input[0]) != batch:
            continue
        if node.op_type == "Reshape" and len(node.input) > 1 and node.input[1] in consts:
            target, _ = consts[node.input[1]]
            if target.size == 0 or target[0] != 1:
                continue
            allowzero = any(a.name == "allowzero" and a.i for a in node.attribute)
            new = target.copy()
            if not allowzero:
                new[0] = 0
            elif (target == -1).sum() == 0:
                new[0] = -1
            else:
                continue
            name = node.input[1]
            if users.get(name, 0) > 1:  # shared with another node: give this one its own
                name = f"{name}__batch_{index}"
            _set_constant(model, node.input[1], name, new)
            node.input[1] = name
            changed.append(label)
        elif node.op_type == "Flatten":
            axis = next((a for a in node.attribute if a.name == "axis"), None)
            if axis is not None and axis.i == 0:
                axis.i = 1
                changed.append(label)
    return changed


def _use_count(nodes: Iterable[onnx.NodeProto]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in nodes:
        for name in node.input:
            counts[name] = counts.get(name, 0) + 1
    return counts


def _set_constant(model: ModelProto, old: str, new: str, values: np.ndarray) -> None:
    """Point ``new`` at ``values``: replace ``old`` in place if it is the same name,
    else add an initializer (listed as an input too where the model lists them)."""
    graph = model.graph
    tensor = numpy_helper.from_array(values.astype(np.int64), new)
    for i, init in enumerate(graph.initializer):
        if init.name == old and old == new:
            graph.initializer[i].CopyFrom(tensor)
            return
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == old and old == new:
            node.attribute[0].t.CopyFrom(tensor)
            return
    graph.initializer.append(tensor)
    if any(v.name == old for v in graph.input):
        graph.input.append(onnx.helper.make_tensor_value_info(new, onnx.TensorProto.INT64, [len(values)]))
