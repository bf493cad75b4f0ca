from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from jetsplit.errors import DataError
from jetsplit.preprocess import Preprocess


def test_gray_fast_path_equals_per_frame() -> None:
    pre = Preprocess(8, 8, colour="gray", mean=(0.5,), std=(0.25,))
    frames = np.random.default_rng(0).integers(0, 256, (5, 8, 8), dtype=np.uint8)
    batch = pre.batch(frames)
    assert batch.shape == (5, 1, 8, 8) and batch.dtype == np.float32
    for i in range(5):
        np.testing.assert_allclose(pre.frame(frames[i]), batch[i], rtol=1e-6)
    np.testing.assert_allclose(batch[0, 0], (frames[0] / 255.0 - 0.5) / 0.25, atol=1e-5)


def test_colour_photo_any_size_to_rgb_nchw() -> None:
    rgb = skdata.astronaut()  # 512x512x3 RGB, a real photo
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    pre = Preprocess(32, 48, colour="rgb", layout="nchw", mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    out = pre.frame(bgr)
    assert out.shape == (3, 32, 48)
    expect = cv2.resize(rgb, (48, 32), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    expect = (expect - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    np.testing.assert_allclose(out, expect.transpose(2, 0, 1), atol=1e-5)


def test_gray_frame_to_bgr_nhwc_uint8() -> None:
    cam = skdata.camera()  # 512x512 gray
    pre = Preprocess(16, 16, colour="bgr", layout="nhwc", dtype="uint8")
    out = pre.batch([cam, cam[:100, :200]])
    assert out.shape == (2, 16, 16, 3) and out.dtype == np.uint8
    assert (out[0, :, :, 0] == out[0, :, :, 2]).all()


def test_bgra_frame_accepted() -> None:
    frame = np.zeros((10, 12, 4), np.uint8)
    frame[..., 2] = 255  # red in BGR order
    out = Preprocess(10, 12, colour="rgb", scale=1.0).frame(frame)
    assert out[0].min() == 255.0 and out[2].max() == 0.0


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (np.zeros((8, 8), np.float32), r"frame: expected dtype uint8, got float32 with shape \(8, 8\)"),
        (np.zeros((8, 8, 2), np.uint8), r"frame: expected shape HxW or HxWxC with C in 1, 3, 4, got \(8, 8, 2\)"),
        (np.zeros((0, 8), np.uint8), r"got \(0, 8\)"),
        (np.zeros((2, 8, 8, 3), np.uint8), r"got \(2, 8, 8, 3\)"),
        ([[1, 2]], r"expected a numpy uint8 array, got list"),
    ],
)
def test_bad_frames(frame: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        Preprocess(8, 8, colour="gray").frame(frame)  # type: ignore[arg-type]


def test_bad_mean_length() -> None:
    with pytest.raises(DataError, match="mean and std need 1 or 3 values"):
        Preprocess(8, 8, colour="rgb", mean=(0.1, 0.2))
