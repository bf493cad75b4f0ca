"""Inference backends behind one contract, chosen by name from an explicit table.

Each backend module imports its library lazily, so a board without TensorRT (or a
host without a GPU) still imports jetsplit.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from jetsplit.engines.base import Engine, TensorSpec
from jetsplit.errors import EngineError

__all__ = ["BACKENDS", "Engine", "TensorSpec", "open_engine"]

# name -> (module, class). Never chosen by guessing: the caller names one.
BACKENDS: dict[str, tuple[str, str]] = {
    "onnxruntime": ("jetsplit.engines.onnxruntime", "OnnxRuntimeEngine"),
    "tensorrt": ("jetsplit.engines.tensorrt", "TensorRTEngine"),
}


def open_engine(model: str | Path, backend: str = "onnxruntime", **options: Any) -> Engine:
    """Open ``model`` on the named backend; ``options`` go to the backend's constructor."""
    try:
        module_name, class_name = BACKENDS[backend]
    except KeyError:
        raise EngineError(f"engine backend {backend!r}: expected one of {', '.join(BACKENDS)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    engine: Engine = cls(model, **options)
    return engine.open()
