"""Frame preprocessing as a bundle's manifest names it.

Frames arrive as a camera pipeline delivers them: HxW (gray) or HxWxC uint8 with
C = 1, 3 (BGR, OpenCV's order) or 4 (BGRA), of any size. The manifest names what the
model wants: size, colour order, layout, scale, mean and std. Doing this from the
manifest, not in user code, is what lets edge and cloud agree on the input bit for
bit, and lets the cloud finish a frame that the edge shipped raw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from jetsplit.errors import DataError

__all__ = ["Preprocess", "check_frame"]

Colour = Literal["gray", "rgb", "bgr"]
Layout = Literal["nchw", "nhwc"]
Interpolation = Literal["area", "linear", "nearest", "cubic"]

_DTYPES = ("float32", "float16", "uint8")


def check_frame(frame: object) -> np.ndarray:
    """Return ``frame`` if it is a usable image, else raise a one-line DataError."""
    if not isinstance(frame, np.ndarray):
        raise DataError(f"frame: expected a numpy uint8 array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise DataError(f"frame: expected dtype uint8, got {frame.dtype} with shape {frame.shape}")
    ok_rank = frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4))
    if not ok_rank or frame.shape[0] == 0 or frame.shape[1] == 0:
        raise DataError(f"frame: expected shape HxW or HxWxC with C in 1, 3, 4, got {frame.shape}")
    return frame


@dataclass(frozen=True)
class Preprocess:
    """Resize, convert colour, scale, normalise and lay out a frame for a model."""

    height: int
    width: int
    colour: Colour = "rgb"
    layout: Layout = "nchw"
    dtype: str = "float32"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    interpolation: Interpolation = "area"

    def __post_init__(self) -> None:
        channels = self.channels
        if len(self.mean) not in (1, channels) or len(self.std) not in (1, channels):
            raise DataError(
                f"preprocess: mean and std need 1 or {channels} values for colour {self.colour!r}, "
                f"got {len(self.mean)} and {len(self.std)}"
            )
        if any(s == 0 for s in self.std):
            raise DataError("preprocess: std must not contain 0")
        if self.dtype not in _DTYPES:
            raise DataError(f"preprocess: dtype expected one of {_DTYPES}, got {self.dtype!r}")

    @property
    def channels(self) -> int:
        return 1 if self.colour == "gray" else 3

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Shape of one preprocessed sample, without the batch axis."""
        if self.layout == "nchw":
            return (self.channels, self.height, self.width)
        return (self.height, self.width, self.channels)

    def shipped(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` at the model's size, still uint8 and in the camera's colour
        order (BGR; gray for a gray model): what a cloud stage needs to preprocess
        it exactly as the edge would, at a fraction of a camera frame's bytes.

        Exact: a gray model's frame is converted before it is resized, as
        :meth:`batch` does; a colour frame is resized per channel, which commutes
        with the BGR-to-RGB swap the cloud then applies.
        """
        import cv2

        img = check_frame(frame)
        if self.colour == "gray":
            return self._resize_colour(img)[:, :, 0]
        if img.ndim == 3 and img.shape[2] == 4:
            img = img[:, :, :3]
        elif img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if img.shape[:2] != (self.height, self.width):
            img = cv2.resize(np.ascontiguousarray(img), (self.width, self.height),
                             interpolation=_cv2_interp(self.interpolation))
        return np.ascontiguousarray(img)

    def frame(self, frame: np.ndarray) -> np.ndarray:
        """One frame -> one sample (no batch axis)."""
        return self._normalise(self._resize_colour(check_frame(frame))[None])[0]

    def batch(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        """Many frames -> one batch. Frames that already have the model's size and
        colour skip OpenCV entirely (the dataset fast path)."""
        if isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim in (3, 4):
            gray_ok = self.colour == "gray" and (frames.ndim == 3 or frames.shape[3] == 1)
            if gray_ok and frames.shape[1:3] == (self.height, self.width):
                return self._normalise(frames.reshape(len(frames), self.height, self.width, 1))
        if len(frames) == 0:
            return np.zeros((0, *self.sample_shape), dtype=self.dtype)
        stacked = np.stack([self._resize_colour(check_frame(f)) for f in frames])
        return self._normalise(stacked)

    # -- steps -------------------------------------------------------------------
    def _resize_colour(self, frame: np.ndarray) -> np.ndarray:
        """HxW[xC] uint8 -> height x width x channels uint8 in the model's colour order."""
        import cv2

        img = frame
        if img.ndim == 3 and img.shape[2] == 1:
            img = img[:, :, 0]
        if self.colour == "gray":
            if img.ndim == 3:
                code = cv2.COLOR_BGRA2GRAY if img.shape[2] == 4 else cv2.COLOR_BGR2GRAY
                img = cv2.cvtColor(img, code)
            if img.shape[:2] != (self.height, self.width):
                img = cv2.resize(img, (self.width, self.height), interpolation=_cv2_interp(self.interpolation))
        else:
            # Resize first: every colour step here works per pixel (a channel swap,
            # dropping alpha, replicating gray), so it commutes with a per-channel
            # resize exactly, and costs a model-sized frame instead of a camera's.
            if img.ndim == 3 and img.shape[2] == 4:
                img = img[:, :, :3]
            if img.shape[:2] != (self.height, self.width):
                img = cv2.resize(np.ascontiguousarray(img), (self.width, self.height),
                                 interpolation=_cv2_interp(self.interpolation))
            if img.ndim == 2:
                img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
            if self.colour == "rgb":
                img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        if img.ndim == 2:
            img = img[:, :, None]
        return np.ascontiguousarray(img)

    def _normalise(self, nhwc: np.ndarray) -> np.ndarray:
        """N x H x W x C uint8 -> the model's dtype and layout.

        The layout changes on the uint8 view (free) and the affine map is two
        passes written into one float array, ``x * (scale / std) - mean / std``:
        at 224x224x3 the four temporaries of the textbook form cost more than the
        resize of a 1280x720 frame.
        """
        src = nhwc.transpose(0, 3, 1, 2) if self.layout == "nchw" else nhwc
        if self.dtype == "uint8":
            return np.ascontiguousarray(src)
        axis = (1, -1, 1, 1) if self.layout == "nchw" else (1, 1, 1, -1)
        inv_std = np.float32(1.0) / np.asarray(self.std, np.float32)
        gain = (np.float32(self.scale) * inv_std).reshape(axis)
        shift = (-np.asarray(self.mean, np.float32) * inv_std).reshape(axis)
        out = np.empty(src.shape, np.float32)
        np.multiply(src, gain, out=out)
        out += shift
        return out.astype(self.dtype, copy=False)


def _cv2_interp(name: str) -> int:
    import cv2

    return {
        "area": cv2.INTER_AREA,
        "linear": cv2.INTER_LINEAR,
        "nearest": cv2.INTER_NEAREST,
        "cubic": cv2.INTER_CUBIC,
    }[name]
