"""The engine contract shared by every inference backend.

An engine is opened from an ONNX file, reports the specs of its input and output
tensors, and runs ``infer(feeds) -> outputs``. The public ``infer`` validates the
feeds against the specs (so every backend rejects bad input the same way, with an
``EngineError`` naming what differs) and times the call; a backend writes only
``_open``, ``_infer`` and ``_close``.

A model whose every input has a batch of exactly 1 written in (an old export, or a
piece of a model that pins its batch where it cannot be proven safe to free it)
still takes a batch: ``infer`` runs it one sample at a time and stacks the outputs,
so callers batch every engine alike and never get another sample's answer.

    >>> from jetsplit.engines import open_engine
    >>> with open_engine("little.onnx") as eng:          # doctest: +SKIP
    ...     out = eng.infer({"input": batch})
    ...     print(eng.last_time_ms)
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

from jetsplit.errors import EngineError

__all__ = ["Engine", "TensorSpec"]


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one tensor; ``None`` marks a dynamic dimension."""

    name: str
    dtype: np.dtype
    shape: tuple[int | None, ...]

    def accepts(self, array: np.ndarray) -> str | None:
        """None if ``array`` fits this spec, else the reason it does not."""
        if array.dtype != self.dtype:
            return f"dtype: expected {self.dtype}, got {array.dtype}"
        if array.ndim != len(self.shape):
            return f"shape: expected rank {len(self.shape)} {self.describe_shape()}, got {array.shape}"
        for axis, (want, have) in enumerate(zip(self.shape, array.shape)):
            if want is not None and want != have:
                return f"shape: expected {self.describe_shape()}, got {array.shape} (axis {axis})"
        return None

    def describe_shape(self) -> str:
        return "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"


class Engine(ABC):
    """One loaded model on one backend. Use as a context manager."""

    backend: str = "abstract"

    def __init__(self, model: str | Path) -> None:
        self.model = Path(model)
        # Per calling thread: an edge agent runs batches on several engine threads.
        self._timing = threading.local()
        self._inputs: tuple[TensorSpec, ...] = ()
        self._outputs: tuple[TensorSpec, ...] = ()
        self._open_flag = False

    # -- lifecycle -----------------------------------------------------------
    def open(self) -> Engine:
        if not self._open_flag:
            if not self.model.is_file():
                raise EngineError(f"model file {str(self.model)!r}: no such file")
            self._inputs, self._outputs = self._open()
            self._open_flag = True
        return self

    def close(self) -> None:
        if self._open_flag:
            self._open_flag = False
            self._close()

    def __enter__(self) -> Engine:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- specs ---------------------------------------------------------------
    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        self._require_open()
        return self._inputs

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        self._require_open()
        return self._outputs

    def input_spec(self, name: str) -> TensorSpec:
        for spec in self.inputs:
            if spec.name == name:
                return spec
        raise EngineError(f"{self.model.name}: no input named {name!r} (inputs: {self._names(self.inputs)})")

    def output_spec(self, name: str) -> TensorSpec:
        for spec in self.outputs:
            if spec.name == name:
                return spec
        raise EngineError(f"{self.model.name}: no output named {name!r} (outputs: {self._names(self.outputs)})")

    @property
    def batch_one(self) -> bool:
        """Whether the model fixes a batch of 1 on every input (see the module doc)."""
        specs = self.inputs
        return bool(specs) and all(len(s.shape) and s.shape[0] == 1 for s in specs)

    # -- inference -----------------------------------------------------------
    @property
    def last_time_ms(self) -> float:
        """How long this thread's last :meth:`infer` took, ms (0 before any)."""
        return float(getattr(self._timing, "ms", 0.0))

    @last_time_ms.setter
    def last_time_ms(self, ms: float) -> None:
        self._timing.ms = ms

    def infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate ``feeds`` against the input specs, run, and time the call."""
        self._require_open()
        sizes = {a.shape[0] for a in feeds.values() if isinstance(a, np.ndarray) and a.ndim}
        if len(sizes) == 1 and sizes != {1} and self.batch_one:
            return self._infer_one_by_one(feeds, sizes.pop())
        self.validate(feeds)
        start = time.perf_counter()
        outputs = self._infer(feeds)
        self.last_time_ms = (time.perf_counter() - start) * 1e3
        return outputs

    def _infer_one_by_one(self, feeds: Mapping[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        parts: list[dict[str, np.ndarray]] = []
        total = 0.0
        for i in range(n):
            sample = {k: v[i : i + 1] for k, v in feeds.items()}
            self.validate(sample)
            start = time.perf_counter()
            parts.append(self._infer(sample))
            total += time.perf_counter() - start
        self.last_time_ms = total * 1e3
        if not parts:
            return {}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def validate(self, feeds: Mapping[str, np.ndarray]) -> None:
        expected = {s.name for s in self.inputs}
        given = set(feeds)
        if given != expected:
            missing = sorted(expected - given)
            extra = sorted(given - expected)
            parts = []
            if missing:
                parts.append(f"missing {missing}")
            if extra:
                parts.append(f"unexpected {extra}")
            raise EngineError(f"{self.model.name}: feeds {', '.join(parts)} (inputs: {self._names(self.inputs)})")
        for spec in self.inputs:
            array = feeds[spec.name]
            if not isinstance(array, np.ndarray):
                raise EngineError(f"{self.model.name}: input {spec.name!r}: expected a numpy array, got {type(array).__name__}")
            reason = spec.accepts(array)
            if reason is not None:
                raise EngineError(f"{self.model.name}: input {spec.name!r} {reason}")

    # -- backend hooks ---------------------------------------------------------
    @abstractmethod
    def _open(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        """Load the model; return (input specs, output specs)."""

    @abstractmethod
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run validated feeds; return every output by name as host arrays."""

    @abstractmethod
    def _close(self) -> None:
        """Release the backend's resources."""

    # -- helpers ---------------------------------------------------------------
    def _require_open(self) -> None:
        if not self._open_flag:
            raise EngineError(f"{self.model.name}: engine is not open (use it as a context manager or call open())")

    @staticmethod
    def _names(specs: tuple[TensorSpec, ...]) -> str:
        return ", ".join(f"{s.name} {s.dtype} {s.describe_shape()}" for s in specs)
