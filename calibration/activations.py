"""Real activations at every cut: one run of the whole model with the cut tensors
exposed as outputs, on real images (what the wire would carry for them)."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx

from jetsplit.engines import open_engine

from .graph import ModelGraph
from .modelfile import save_model

__all__ = ["cut_activations"]


def cut_activations(graph: ModelGraph, tensors: Sequence[str],
                    inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The values of ``tensors`` on ``inputs`` (a batch), by name."""
    wanted = [t for t in dict.fromkeys(tensors) if t not in graph.outputs]
    model = onnx.ModelProto()
    model.CopyFrom(graph.model)
    for name in wanted:
        info = graph.info(name)
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, info.elem_type or 1, None))
    with tempfile.TemporaryDirectory(prefix="jetsplit-activations-") as tmp:
        path = Path(tmp) / "exposed.onnx"
        save_model(model, path, external=bool(graph.external))
        with open_engine(path) as engine:
            out = engine.infer(dict(inputs))
    return {name: out[name] for name in dict.fromkeys(tensors)}
