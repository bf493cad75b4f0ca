"""Reading the ONNX files users bring, and writing cut pieces the same way.

Users bring anything from the model zoo's IR-3 files (initializers also listed as
graph inputs, which IR 3 required) to current exports with their weights in an
external-data file beside the graph. :func:`load_model` reads either, and turns the
ways a file can be unusable into one line each: not there, not ONNX, external data
missing. It also normalises the IR-3 convention away (initializers are no longer
graph inputs, IR raised to 4), so pieces cut from such a model pass the checker.

:func:`save_model` writes a head or tail as its source was written: with an
external-data file (``<file>.data`` beside it) when the source had one or the piece
is too large for one protobuf, inline otherwise.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import ModelProto
from onnx.external_data_helper import uses_external_data

from jetsplit.errors import EngineError

__all__ = ["external_files", "has_external_data", "load_model", "save_model"]

# Protobuf refuses messages over 2 GiB; leave room for the graph itself.
_INLINE_LIMIT = 1 << 30
# IR 4 is the first that lets an initializer be something other than a graph input.
_MIN_IR = 4


def load_model(path: str | Path) -> tuple[ModelProto, tuple[str, ...]]:
    """Load ``path`` with its external data; ``EngineError`` (one line) if unusable.

    Returns the model and the names of the external-data files it was read from.
    """
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"model file {str(path)!r}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises untyped decode errors
        raise EngineError(
            f"model file {str(path)!r}: not an ONNX model ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})"
        ) from exc
    if not model.graph.node or not model.graph.output or not model.opset_import:
        raise EngineError(f"model file {str(path)!r}: not an ONNX model (no graph, outputs or opset)")
    external = tuple(external_files(model))
    missing = [name for name in external if not (path.parent / name).is_file()]
    if missing:
        raise EngineError(
            f"model file {str(path)!r}: its weights are in external data file "
            f"{missing[0]!r}, which is not beside it in {str(path.parent)!r}"
        )
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except Exception as exc:
        raise EngineError(f"model file {str(path)!r}: cannot read its external data: {exc}") from exc
    _normalise(model)
    return model, external


def external_files(model: ModelProto) -> list[str]:
    """Names (relative to the model's folder) of the external-data files it reads."""
    names: list[str] = []
    for tensor in _tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location" and entry.value not in names:
                    names.append(entry.value)
    return names


def has_external_data(model: ModelProto) -> bool:
    return any(uses_external_data(t) for t in _tensors(model))


def save_model(model: ModelProto, path: Path, external: bool = False) -> list[Path]:
    """Write ``model`` to ``path``; with ``external`` (or when too large for one
    protobuf) its weights go to ``<path>.data``. Returns every file written."""
    if external or model.ByteSize() > _INLINE_LIMIT:
        data = path.with_name(path.name + ".data")
        data.unlink(missing_ok=True)  # onnx appends to an existing data file
        onnx.save(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data.name,
            size_threshold=1024,
        )
        return [path, data] if data.is_file() else [path]
    onnx.save(model, str(path))
    return [path]


def _normalise(model: ModelProto) -> None:
    """Initializers stop being graph inputs (the IR-3 convention); IR at least 4."""
    inits = {t.name for t in model.graph.initializer}
    if any(v.name in inits for v in model.graph.input):
        inputs = [v for v in model.graph.input if v.name not in inits]
        del model.graph.input[:]
        model.graph.input.extend(inputs)
    model.ir_version = max(model.ir_version, _MIN_IR)


def _tensors(model: ModelProto) -> list[onnx.TensorProto]:
    from onnx.external_data_helper import _get_all_tensors

    return list(_get_all_tensors(model))
