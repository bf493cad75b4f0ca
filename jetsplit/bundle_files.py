"""The files of a bundle: hashing them, and bringing a model's external data along.

A model exported with its weights beside it (``model.onnx`` + ``model.onnx.data``)
is several files; a bundle carries and hashes each, so the fingerprint covers the
weights the engines run.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from jetsplit.errors import BundleError
from jetsplit.onnxfiles import external_data_files

__all__ = ["companions", "copy_file", "file_sha256"]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def copy_file(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.resolve() != dest.resolve():
        shutil.copyfile(src, dest)


def companions(out_dir: Path, model: str, source: Path | None, taken: list[str]) -> list[str]:
    """The external-data files of ``model`` (bundle-relative), copied into the bundle
    from beside ``source``; a name another model already uses with other bytes is
    an error, since one of the two would get the other's weights."""
    model_path = out_dir / model
    if not model_path.is_file():
        return []  # reported as a missing file when the bundle is loaded back
    out = []
    for name in external_data_files(model_path):
        rel = str(Path(model).parent / name) if Path(model).parent != Path() else name
        src = (source.parent if source is not None else model_path.parent) / name
        dest = out_dir / rel
        if not src.is_file():
            raise BundleError(f"[[stage]] model {model!r}: its external data file {name!r} is missing (looked in {src.parent})")
        if rel in taken and src.resolve() != dest.resolve() and file_sha256(src) != file_sha256(dest):
            raise BundleError(f"[[stage]] model {model!r}: external data file {name!r} is also another model's, with other weights")
        copy_file(src, dest)
        out.append(rel)
    return out
