from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from jetsplit.datasets import load_dataset, split_indices
from jetsplit.errors import DataError


def test_mnist_splits_fixed_disjoint_balanced() -> None:
    full = load_dataset("mnist")
    assert len(full) == 5000 and full.images.shape == (5000, 28, 28) and full.images.dtype == np.uint8
    parts = {s: split_indices(full.labels, s) for s in ("train", "calib", "test")}
    assert [len(parts[s]) for s in ("train", "calib", "test")] == [3000, 1000, 1000]
    assert not set(parts["train"]) & set(parts["test"]) and not set(parts["calib"]) & set(parts["test"])
    assert np.bincount(full.labels[parts["test"]]).tolist() == [100] * 10
    np.testing.assert_array_equal(split_indices(full.labels, "test"), parts["test"])  # deterministic


def test_digits() -> None:
    d = load_dataset("digits", "test")
    assert d.images.shape[1:] == (8, 8) and d.images.max() == 255 and len(d.class_names) == 10


def test_folder_and_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(5):
            cv2.imwrite(str(tmp_path / "imgs" / cls / f"{i}.png"), rng.integers(0, 255, (12 + i, 10, 3), dtype=np.uint8))
    d = load_dataset(f"folder:{tmp_path / 'imgs'}")
    assert d.class_names == ("cat", "dog") and d.labels.tolist() == [0] * 5 + [1] * 5
    assert isinstance(d.images, list) and d.images[3].shape == (15, 10, 3)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 255, (20, 6, 6), dtype=np.uint8), y=np.arange(20) % 4)
    n = load_dataset(f"npz:{tmp_path / 'd.npz'}", "test")
    assert len(n) == 4 and n.class_names == ("0", "1", "2", "3")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("imagenet", r"dataset spec 'imagenet': expected mnist, digits, folder:PATH, npz:PATH, corrupt:NAME:SEVERITY:SPEC"),
        ("folder:/nonexistent/x", r"not a directory"),
        ("npz:/nonexistent/x.npz", r"no such file"),
    ],
)
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(spec)


def test_npz_wrong_dtype(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((3, 4, 4), np.float32), y=np.zeros(3, int))
    with pytest.raises(DataError, match="x must be uint8"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_bad_split() -> None:
    with pytest.raises(DataError, match="split: expected one of"):
        load_dataset("digits", "validation")
