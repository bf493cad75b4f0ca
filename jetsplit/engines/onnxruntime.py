"""ONNX Runtime backend: the default everywhere.

The execution-provider list is configuration, never guessed: CPU unless the caller
names others (``CUDAExecutionProvider``, ``TensorrtExecutionProvider``). A provider
that this ONNX Runtime build lacks is an error, not a silent fallback, so an
operator who asked for the GPU knows when they did not get it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.engines.base import Engine, TensorSpec
from jetsplit.errors import EngineError

__all__ = ["OnnxRuntimeEngine"]

# ONNX Runtime reports element types as strings such as "tensor(float)".
_ORT_TYPES: dict[str, np.dtype] = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(double)": np.dtype(np.float64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(bool)": np.dtype(np.bool_),
}


class OnnxRuntimeEngine(Engine):
    """An ``onnxruntime.InferenceSession`` behind the engine contract."""

    backend = "onnxruntime"

    def __init__(
        self,
        model: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
    ) -> None:
        super().__init__(model)
        self.providers = tuple(providers)
        self.intra_op_threads = intra_op_threads
        self.inter_op_threads = inter_op_threads
        self._session: Any = None

    def _open(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        missing = [p for p in self.providers if p not in available]
        if missing:
            raise EngineError(
                f"{self.model.name}: execution providers {missing} are not in this ONNX Runtime "
                f"(available: {sorted(available)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(
                str(self.model), sess_options=options, providers=list(self.providers)
            )
        except Exception as exc:  # ORT raises its own untyped errors for bad models
            raise EngineError(f"{self.model.name}: ONNX Runtime cannot load it: {_first_line(exc)}") from exc
        inputs = tuple(_spec(a) for a in self._session.get_inputs())
        outputs = tuple(_spec(a) for a in self._session.get_outputs())
        return inputs, outputs

    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [s.name for s in self._outputs]
        try:
            values = self._session.run(names, dict(feeds))
        except Exception as exc:
            raise EngineError(f"{self.model.name}: inference failed: {_first_line(exc)}") from exc
        return dict(zip(names, values))

    def _close(self) -> None:
        self._session = None


def _spec(arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(arg.type)
    if dtype is None:
        raise EngineError(f"tensor {arg.name!r}: unsupported element type {arg.type}")
    # Symbolic (str) or missing dims are dynamic.
    shape = tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
    return TensorSpec(arg.name, dtype, shape)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
