from __future__ import annotations

import numpy as np
import pytest

from jetsplit.corruptions import CORRUPTIONS, SEVERITIES, corrupt, corrupt_images
from jetsplit.datasets import load_dataset, split_indices
from jetsplit.errors import DataError


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    images = load_dataset("mnist", "test").images
    assert isinstance(images, np.ndarray)
    return images[::10]  # 100 digits, every class


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    import cv2
    from sklearn.datasets import load_sample_image

    rgb = load_sample_image("china.jpg")  # 427 x 640 x 3, a real camera photo
    return np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)[::2, ::2])


def _damage(clean: np.ndarray, name: str, severity: int) -> float:
    out = np.stack([corrupt(im, name, severity, seed=i) for i, im in enumerate(clean)])
    assert out.shape == clean.shape and out.dtype == np.uint8
    return float(np.abs(out.astype(np.float64) - clean).mean())


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_damage_grows_with_severity_and_every_level_changes_the_image(
        name: str, digits: np.ndarray, photo: np.ndarray) -> None:
    for clean in (digits, photo[None]):
        damage = [_damage(clean, name, s) for s in SEVERITIES]
        assert min(damage) > 0.0, f"{name} left an image unchanged: {damage}"
        assert all(b > a for a, b in zip(damage, damage[1:])), f"{name} damage not increasing: {damage}"
        assert _damage(clean, name, 0) == 0.0


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_deterministic_in_the_seed(name: str, photo: np.ndarray) -> None:
    a, b = corrupt(photo, name, 3, seed=5), corrupt(photo, name, 3, seed=5)
    np.testing.assert_array_equal(a, b)
    if name in ("gaussian_noise", "shot_noise", "fog", "motion_blur"):
        assert not np.array_equal(a, corrupt(photo, name, 3, seed=6))


def test_corrupted_specs_are_the_clean_split_damaged(digits: np.ndarray) -> None:
    clean = load_dataset("mnist", "test")
    short, long = load_dataset("mnist-c:fog:3", "test"), load_dataset("corrupt:fog:3:mnist", "test")
    np.testing.assert_array_equal(short.images, long.images)
    np.testing.assert_array_equal(short.labels, clean.labels)
    seeds = split_indices(load_dataset("mnist").labels, "test")  # the index in the whole set
    np.testing.assert_array_equal(short.images, corrupt_images(clean.images, "fog", 3, seeds=seeds))
    assert short.name == "mnist-c:fog:3@test"
    # A nested spec applies the inner corruption first; any source spec works.
    both = load_dataset("corrupt:jpeg:2:digits-c:pixelate:1", "calib")
    inner = load_dataset("digits-c:pixelate:1", "calib")
    seeds = split_indices(load_dataset("digits").labels, "calib")
    np.testing.assert_array_equal(both.images, corrupt_images(inner.images, "jpeg", 2, seeds=seeds))


def test_frames_of_several_sizes_stay_a_list() -> None:
    frames = [np.full((12 + i, 10, 3), 100, np.uint8) for i in range(3)]
    out = corrupt_images(frames, "defocus_blur", 2)
    assert isinstance(out, list) and [f.shape for f in out] == [f.shape for f in frames]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mnist-c:smoke:3", r"corruption 'smoke': expected one of gaussian_noise, "),
        ("mnist-c:fog:9", r"corruption fog severity: expected an integer 0..5, got 9"),
        ("mnist-c:fog", r"corruption 'fog': expected NAME:SEVERITY such as fog:3"),
        ("corrupt:fog:3", r"expected corrupt:NAME:SEVERITY:SPEC such as corrupt:fog:3:digits"),
        ("corrupt:fog:3:imagenet", r"dataset spec 'imagenet': expected mnist, digits"),
    ],
)
def test_bad_corrupted_specs(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message):
        load_dataset(spec, "test")


def test_bad_frames() -> None:
    with pytest.raises(DataError, match=r"expected a non-empty uint8 H x W or H x W x C \(C = 1 or 3\) frame, got float32"):
        corrupt(np.zeros((4, 4), np.float32), "fog", 1)
    with pytest.raises(DataError, match=r"got uint8 \(4, 4, 4\)"):
        corrupt(np.zeros((4, 4, 4), np.uint8), "jpeg", 1)
    with pytest.raises(DataError, match="severity"):
        corrupt(np.zeros((4, 4), np.uint8), "fog", True)
