"""Where the TensorRT backend keeps what it builds, and what it needs to know first.

Pure Python, no TensorRT import, so every rule here is testable on a host without a
GPU: the engine-cache key, the cache paths, the atomic file write, the batch profile
and the facts about an ONNX model that decide whether a precision is buildable.

A TensorRT plan only runs on the TensorRT version and GPU it was built for, and it
bakes in the precision and the batch range. So the key is a hash over all of them
plus the model's bytes: change any one and the backend builds a new plan instead of
loading a stale one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from jetsplit.errors import EngineError

__all__ = [
    "PRECISIONS",
    "BatchProfile",
    "EngineKey",
    "ModelFacts",
    "atomic_write",
    "default_cache_dir",
    "inspect_model",
    "is_qdq_model",
    "model_digest",
    "timing_cache_path",
    "validate_precision",
]

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")

# Bump when the plan-building recipe changes (flags, profile rules), so plans built
# by an older jetsplit are rebuilt rather than trusted.
_RECIPE_VERSION = 1


def validate_precision(precision: str) -> str:
    """Return ``precision`` if it is one this backend builds, else raise EngineError."""
    if precision not in PRECISIONS:
        raise EngineError(f"tensorrt precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes one plan accepts: TensorRT's optimization profile on axis 0."""

    min: int = 1
    opt: int = 1
    max: int = 8

    def __post_init__(self) -> None:
        for name in ("min", "opt", "max"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise EngineError(f"tensorrt batch profile {name}: expected an integer >= 1, got {value!r}")
        if not self.min <= self.opt <= self.max:
            raise EngineError(
                f"tensorrt batch profile: expected min <= opt <= max, got {self.min} / {self.opt} / {self.max}"
            )

    def shapes(self, shape: tuple[int, ...], tensor: str) -> tuple[tuple[int, ...], ...] | None:
        """(min, opt, max) shapes for an input whose TensorRT shape is ``shape``.

        None when the input is fully static (no profile needed). Only the batch axis
        may be dynamic (-1): jetsplit feeds fixed-size frames and activations, and a
        profile over unknown spatial sizes would have to be guessed.
        """
        if all(d >= 0 for d in shape):
            return None
        if not shape or any(d < 0 for d in shape[1:]):
            raise EngineError(
                f"tensorrt input {tensor!r} has dynamic non-batch dimensions {shape}: "
                "export the model with only the batch axis dynamic"
            )
        rest = tuple(shape[1:])
        return ((self.min, *rest), (self.opt, *rest), (self.max, *rest))


@dataclass(frozen=True)
class EngineKey:
    """Everything a serialized plan depends on; its digest names the plan file."""

    model_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profile: BatchProfile
    dla_core: int | None = None

    def digest(self) -> str:
        fields = asdict(self)
        fields["recipe"] = _RECIPE_VERSION
        canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def describe(self) -> dict[str, object]:
        """The key as plain data, written beside the plan so a person can tell plans apart."""
        fields = asdict(self)
        fields["recipe"] = _RECIPE_VERSION
        fields["digest"] = self.digest()
        return fields

    def plan_path(self, cache_dir: Path, model_name: str) -> Path:
        stem = Path(model_name).stem or "model"
        return cache_dir / f"{stem}.{self.precision}.{self.digest()[:20]}.plan"


def timing_cache_path(cache_dir: Path, trt_version: str, gpu_name: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT version and GPU: tactic timings do not carry over."""
    tag = hashlib.sha256(f"{trt_version}|{gpu_name}|{compute_capability}".encode()).hexdigest()[:16]
    return cache_dir / f"timing.{tag}.cache"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/jetsplit/tensorrt`` (``~/.cache/...``): plans are device caches, never bundle files."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jetsplit" / "tensorrt"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never half.

    Two processes building the same plan (edge agent and a bench run) both finish
    with a complete file; the last rename wins and both plans are equivalent.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class ModelFacts:
    """What the builder must know about an ONNX model before choosing flags."""

    has_qdq: bool
    has_fp16: bool
    external_data: tuple[str, ...]


_QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
_ONNX_FLOAT16 = 10  # onnx.TensorProto.FLOAT16; a constant so this module need not import onnx at load


def inspect_model(path: Path) -> ModelFacts:
    """Read op types and tensor types of an ONNX file (weights stay on disk)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx raises DecodeError, ValueError, ... for a bad file
        raise EngineError(f"{path.name}: not a readable ONNX model: {exc}") from exc
    graphs = list(_graphs(model.graph))
    ops = {node.op_type for g in graphs for node in g.node}
    fp16 = any(_is_fp16(g) for g in graphs)
    external = sorted(
        {
            entry.value
            for g in graphs
            for init in g.initializer
            for entry in init.external_data
            if entry.key == "location"
        }
    )
    return ModelFacts(has_qdq=bool(ops & _QDQ_OPS), has_fp16=fp16, external_data=tuple(external))


def is_qdq_model(path: Path) -> bool:
    """True if the model is explicitly quantized (has QuantizeLinear/DequantizeLinear nodes)."""
    return inspect_model(path).has_qdq


def model_digest(path: Path, external_data: Iterable[str] = ()) -> str:
    """SHA-256 over the model's bytes, then each external weight file's name and bytes.

    The model's own file name is left out: a renamed copy is the same model.
    """
    digest = hashlib.sha256()
    files = [(b"", path), *((name.encode() + b"\0", path.parent / name) for name in external_data)]
    for label, file in files:
        if not file.is_file():
            raise EngineError(f"{path.name}: external data file {str(file)!r}: no such file")
        digest.update(label)
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _graphs(graph: object) -> Iterable:  # onnx.GraphProto, untyped in onnx's stubs
    """The graph and every subgraph (If/Loop/Scan bodies), where QDQ nodes may also sit."""
    yield graph
    for node in graph.node:  # type: ignore[attr-defined]
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _is_fp16(graph: object) -> bool:
    inits = any(t.data_type == _ONNX_FLOAT16 for t in graph.initializer)  # type: ignore[attr-defined]
    values = [*graph.input, *graph.output, *graph.value_info]  # type: ignore[attr-defined]
    typed = any(v.type.tensor_type.elem_type == _ONNX_FLOAT16 for v in values)
    casts = any(
        node.op_type == "Cast" and any(a.name == "to" and a.i == _ONNX_FLOAT16 for a in node.attribute)
        for node in graph.node  # type: ignore[attr-defined]
    )
    return inits or typed or casts
