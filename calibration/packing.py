"""Multi-tensor cuts as one carried tensor: packed by the head, unpacked by the tail.

Where no single tensor separates a branched graph (a residual block's branch and
its skip, an Inception module's four branches), a cut names several tensors. The
bundle, the protocol, the worker and the agent carry exactly one tensor between
stages, so calibration packs the cut into one: the head's last nodes flatten each
cut tensor per sample and concatenate them (``(B, n1 + n2 + ...)``), and the
tail's first nodes slice each back out and reshape it to its own shape. The bytes
on the wire are the sum of the cut tensors' bytes, and nothing downstream of the
graphs needs to know the cut had several tensors.

One encoding scale covers the packed tensor (i8 on the wire): tensors of very
different ranges lose more precision there than they would apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import onnx
from onnx import ModelProto, helper, numpy_helper

from jetsplit.errors import ConfigError

from .graph import TensorInfo

__all__ = ["PACKED", "pack_head", "unpack_tail"]

PACKED = "jetsplit_packed_cut"
_PREFIX = "jetsplit_pack/"


def _opset(model: ModelProto) -> int:
    return next((int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)


def _sizes(infos: Sequence[TensorInfo]) -> list[int]:
    sizes = []
    for info in infos:
        if info.shape is None or any(d is None for d in info.shape[1:]):
            raise ConfigError(f"cut tensor {info.name!r}: its shape {info.describe_shape()} is not fully known; cannot pack it")
        sizes.append(math.prod(d for d in info.shape[1:] if d is not None))
    if len({info.elem_type for info in infos}) != 1:
        kinds = ", ".join(f"{i.name!r} {i.dtype_name}" for i in infos)
        raise ConfigError(f"cut tensors have different element types ({kinds}); a packed cut needs one")
    return sizes


def pack_head(head: ModelProto, infos: Sequence[TensorInfo], keep: Sequence[str] = (),
              packed: str = PACKED) -> ModelProto:
    """``head`` with one output ``packed`` holding every cut tensor, flattened per
    sample and concatenated in order; ``keep`` are outputs that stay as they are."""
    _sizes(infos)
    model = ModelProto()
    model.CopyFrom(head)
    graph = model.graph
    flat = []
    for i, info in enumerate(infos):
        name = f"{_PREFIX}{packed}/flat{i}"
        graph.node.append(helper.make_node("Flatten", [info.name], [name], axis=1, name=name))
        flat.append(name)
    graph.node.append(helper.make_node("Concat", flat, [packed], axis=1, name=f"{_PREFIX}{packed}/concat"))
    outs = {o.name: o for o in graph.output}
    batch = _batch_dim(outs[infos[0].name]) if infos[0].name in outs else "batch"
    value = helper.make_tensor_value_info(packed, infos[0].elem_type, [batch, sum(_sizes(infos))])
    kept = [outs[n] for n in keep if n in outs]
    del graph.output[:]
    graph.output.extend([value, *kept])
    return model


def unpack_tail(tail: ModelProto, infos: Sequence[TensorInfo], packed: str = PACKED) -> ModelProto:
    """``tail`` reading one input ``packed`` instead of the cut tensors."""
    sizes = _sizes(infos)
    model = ModelProto()
    model.CopyFrom(tail)
    graph = model.graph
    names = {info.name for info in infos}
    inputs = {v.name: v for v in graph.input}
    batch = _batch_dim(inputs[infos[0].name]) if infos[0].name in inputs else "batch"
    nodes = []
    offset = 0
    new_slice = _opset(model) >= 10
    for i, (info, size) in enumerate(zip(infos, sizes)):
        part = f"{_PREFIX}{packed}/part{i}"
        if new_slice:
            bounds = [f"{part}/starts", f"{part}/ends", f"{part}/axes"]
            for bound, value in zip(bounds, (offset, offset + size, 1)):
                graph.initializer.append(numpy_helper.from_array(np.asarray([value], np.int64), bound))
            nodes.append(helper.make_node("Slice", [packed, *bounds], [part], name=part))
        else:
            nodes.append(helper.make_node("Slice", [packed], [part], name=part, starts=[offset],
                                          ends=[offset + size], axes=[1]))
        shape_name = f"{part}/shape"
        target = [-1, *[int(d) for d in (info.shape or ())[1:] if d is not None]]
        graph.initializer.append(numpy_helper.from_array(np.asarray(target, np.int64), shape_name))
        nodes.append(helper.make_node("Reshape", [part, shape_name], [info.name], name=f"{part}/reshape"))
        offset += size
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + rest)
    kept = [v for v in graph.input if v.name not in names]
    del graph.input[:]
    graph.input.extend([helper.make_tensor_value_info(packed, infos[0].elem_type, [batch, offset]), *kept])
    onnx.checker.check_model(model)
    return model


def _batch_dim(value: onnx.ValueInfoProto) -> str | int:
    dims = value.type.tensor_type.shape.dim
    if dims and dims[0].HasField("dim_value"):
        return int(dims[0].dim_value)
    return dims[0].dim_param if dims and dims[0].dim_param else "batch"
