"""The files an ONNX model is made of: the graph, and any external-data files.

Current exporters put the weights of a large model in a file beside the graph
(``model.onnx`` + ``model.onnx.data``); the graph names it by a path relative to
its own folder. A bundle must carry and hash every such file, or the fingerprint
would not cover the weights the engines run.
"""

from __future__ import annotations

from pathlib import Path

from jetsplit.errors import BundleError

__all__ = ["external_data_files"]


def external_data_files(model_path: Path) -> list[str]:
    """Names, relative to the model's folder, of the external-data files it reads.

    Only the graph is parsed, never the weights. A file that does not parse has
    none (the engine that opens it says what is wrong); ``BundleError`` if it names
    a data file outside its folder.
    """
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    try:
        model = onnx.load(str(model_path), load_external_data=False)
    except Exception:  # protobuf raises untyped decode errors
        return []
    names: list[str] = []
    for tensor in _get_all_tensors(model):
        if not uses_external_data(tensor):
            continue
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value not in names:
                location = Path(entry.value)
                if location.is_absolute() or ".." in location.parts:
                    raise BundleError(
                        f"model file {str(model_path)!r}: external data {entry.value!r} is not "
                        "beside the model (a bundle carries files inside its folder only)"
                    )
                names.append(entry.value)
    return names
