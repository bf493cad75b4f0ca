"""Camera corruptions: harder, realistic data built from what ships.

After Hendrycks & Dietterich's ImageNet-C and Mu & Gilmer's MNIST-C, written here
with numpy and OpenCV. Each corruption has five severities (0 is the clean frame);
what a severity means is fixed by the tables below, relative to the frame's size
where the effect is spatial, so a 28x28 digit and a 640x480 photo blur alike.

=================  ==========================================================
``gaussian_noise`` additive N(0, s) on [0, 1] pixels
``shot_noise``     Poisson photon noise: ``Poisson(x * lam) / lam``
``motion_blur``    a line kernel of length ``l * min(H, W)`` at a random angle
``defocus_blur``   an anti-aliased disk of radius ``r * min(H, W)``
``fog``            a smooth random haze (octave value noise), contrast lowered
``contrast``       pixels pulled toward the frame's mean: ``(x - m) * c + m``
``brightness``     the value channel raised by ``b`` (HSV for colour frames)
``pixelate``       box-downsampled to a fraction of the size, upsampled blocky
``jpeg``           a JPEG round trip at a low quality
=================  ==========================================================

Frames are uint8, ``H x W`` or ``H x W x 1`` (gray) or ``H x W x 3`` (BGR, as
OpenCV delivers them); the result has the frame's shape and dtype. Everything random (the noise,
the blur's angle, the fog's haze) comes from ``numpy.random.default_rng(seed)``,
so a (frame, name, severity, seed) always gives the same bytes, and one seed gives
the same noise pattern at every severity, scaled: damage grows with severity frame
by frame, not only on average.

    >>> import numpy as np
    >>> frame = np.full((28, 28), 128, np.uint8)
    >>> corrupt(frame, "fog", 3, seed=7).shape
    (28, 28)

Datasets (:mod:`jetsplit.datasets`) apply these per sample with the sample's index
in the whole set as its seed: ``corrupt:NAME:SEVERITY:SPEC``, and the shorthands
``mnist-c:NAME:SEVERITY`` and ``digits-c:NAME:SEVERITY``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from jetsplit.errors import DataError

__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt", "corrupt_images", "parse_corruption"]

SEVERITIES = (1, 2, 3, 4, 5)

# Severity 1..5 parameters. Noise, contrast, brightness and JPEG follow ImageNet-C's
# tables; the spatial ones are fractions of the frame's short side (ImageNet-C's
# pixel values at 224, rescaled) so they mean the same on 8x8 digits and photos.
_GAUSS_SIGMA = (0.02, 0.04, 0.06, 0.08, 0.1)
_SHOT_LAMBDA = (60.0, 25.0, 12.0, 5.0, 3.0)
_MOTION_LENGTH = (0.05, 0.08, 0.11, 0.15, 0.2)
_DEFOCUS_RADIUS = (0.03, 0.045, 0.06, 0.08, 0.1)
_FOG = ((0.04, 2.0), (0.06, 2.0), (0.08, 1.7), (0.1, 1.5), (0.15, 1.4))  # (strength, octave decay)
_CONTRAST = (0.9, 0.85, 0.8, 0.7, 0.6)
_BRIGHTNESS = (0.02, 0.03, 0.04, 0.06, 0.1)
_JPEG_QUALITY = (25, 18, 15, 10, 7)
_PIXELATE = (0.6, 0.5, 0.45, 0.4, 0.33)


def _float(frame: np.ndarray) -> np.ndarray:
    out: np.ndarray = frame.astype(np.float32) / 255.0
    return out


def _gaussian_noise(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    out: np.ndarray = x + rng.standard_normal(x.shape).astype(np.float32) * _GAUSS_SIGMA[level]
    return out


def _shot_noise(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    lam = _SHOT_LAMBDA[level]
    # Photon counts by the normal approximation to Poisson(x * lam), one standard
    # normal per pixel: numpy's Poisson draws differ per lambda, this keeps one
    # seed's pattern at every severity (damage grows frame by frame).
    z = rng.standard_normal(x.shape).astype(np.float32)
    counts = np.maximum(x * lam + np.sqrt(np.maximum(x * lam, 0.0)) * z, 0.0)
    out: np.ndarray = np.round(counts) / lam
    return out


def _filter(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    import cv2

    kernel = (kernel / kernel.sum()).astype(np.float32)
    out: np.ndarray = cv2.filter2D(x, -1, kernel, borderType=cv2.BORDER_REFLECT)
    return out


def _motion_blur(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    length = max(_MOTION_LENGTH[level] * min(x.shape[:2]), 1.0)
    angle = np.deg2rad(rng.uniform(-45.0, 45.0))
    size = 2 * int(np.ceil(length)) + 1
    c = size // 2
    # A one-sided streak (the camera moved during the exposure), splatted with
    # bilinear weights so a fractional length still grows the kernel smoothly.
    t = np.linspace(0.0, length, max(int(length * 8), 2))
    px, py = c + t * np.cos(angle), c + t * np.sin(angle)
    x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
    fx, fy = px - x0, py - y0
    flat = np.concatenate([np.clip(y0 + dy, 0, size - 1) * size + np.clip(x0 + dx, 0, size - 1)
                           for dy in (0, 1) for dx in (0, 1)])
    weights = np.concatenate([wy * wx for wy in (1 - fy, fy) for wx in (1 - fx, fx)])
    kernel = np.bincount(flat, weights, minlength=size * size).reshape(size, size).astype(np.float32)
    return _filter(x, kernel)


def _defocus_blur(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    radius = max(_DEFOCUS_RADIUS[level] * min(x.shape[:2]), 0.5)
    half = int(np.ceil(radius)) + 1
    # Anti-aliased disk: each kernel cell weighted by how much of it (8x8 sub-samples)
    # falls inside the radius.
    sub = (np.arange(8) + 0.5) / 8 - 0.5
    grid = np.arange(-half, half + 1, dtype=np.float32)
    yy = grid[:, None, None, None] + sub[None, None, :, None]
    xx = grid[None, :, None, None] + sub[None, None, None, :]
    kernel = ((yy**2 + xx**2) <= radius**2).mean(axis=(2, 3)).astype(np.float32)
    return _filter(x, kernel)


def _haze(shape: tuple[int, int], decay: float, rng: np.random.Generator) -> np.ndarray:
    """Smooth noise in [0, 1]: random grids from 2x2 up to the frame's size,
    bilinearly upsampled and summed with weights falling by ``decay`` per octave."""
    import cv2

    h, w = shape
    out = np.zeros((h, w), np.float32)
    cells, weight = 2, 1.0
    while True:
        grid = rng.random((cells, cells)).astype(np.float32)
        out += weight * cv2.resize(grid, (w, h), interpolation=cv2.INTER_LINEAR)
        if cells >= max(h, w):
            break
        cells, weight = cells * 2, weight / decay
    lo, hi = float(out.min()), float(out.max())
    result: np.ndarray = (out - lo) / (hi - lo) if hi > lo else np.full((h, w), 0.5, np.float32)
    return result


def _fog(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    strength, decay = _FOG[level]
    haze = _haze(x.shape[:2], decay, rng)
    if x.ndim == 3:
        haze = haze[:, :, None]
    top = max(float(x.max()), 1e-3)
    out: np.ndarray = (x + strength * haze) * top / (top + strength)
    return out


def _contrast(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    mean = x.mean(axis=(0, 1), keepdims=True)
    out: np.ndarray = (x - mean) * _CONTRAST[level] + mean
    return out


def _brightness(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    import cv2

    b = _BRIGHTNESS[level]
    if x.ndim == 2 or x.shape[2] == 1:
        out: np.ndarray = x + b
        return out
    hsv = cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_BGR2HSV)
    hsv[:, :, 2] = np.clip(hsv[:, :, 2] + b, 0.0, 1.0)
    bgr: np.ndarray = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return bgr


def _jpeg(frame: np.ndarray, level: int) -> np.ndarray:
    import cv2

    ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY[level]])
    if not ok:
        raise DataError(f"corruption jpeg: OpenCV cannot encode a frame of shape {frame.shape}")
    flag = cv2.IMREAD_GRAYSCALE if frame.ndim == 2 or frame.shape[2] == 1 else cv2.IMREAD_COLOR
    out = cv2.imdecode(buf, flag)
    if out is None:
        raise DataError(f"corruption jpeg: OpenCV cannot decode its own JPEG of a {frame.shape} frame")
    return np.asarray(out, np.uint8).reshape(frame.shape)


def _pixelate(x: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
    # Pixel r of n goes to cell r * cells // n, averaged and painted back with the
    # same mapping: OpenCV's area-down then nearest-up disagree on cell edges, which
    # made a coarser grid that happened to align do less damage than a finer one.
    h, w = x.shape[:2]
    f = _PIXELATE[level]
    cy = (np.arange(h) * max(round(h * f), 1)) // h
    cx = (np.arange(w) * max(round(w * f), 1)) // w
    ys, xs = np.flatnonzero(np.diff(cy, prepend=-1)), np.flatnonzero(np.diff(cx, prepend=-1))
    sums = np.add.reduceat(np.add.reduceat(x, ys, axis=0), xs, axis=1)
    counts = np.outer(np.diff(np.append(ys, h)), np.diff(np.append(xs, w))).astype(np.float32)
    means = sums / (counts if x.ndim == 2 else counts[:, :, None])
    out: np.ndarray = means[cy][:, cx]
    return out


_FloatFn = Callable[[np.ndarray, int, np.random.Generator], np.ndarray]
_ON_FLOAT: dict[str, _FloatFn] = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "motion_blur": _motion_blur,
    "defocus_blur": _defocus_blur,
    "fog": _fog,
    "contrast": _contrast,
    "brightness": _brightness,
    "pixelate": _pixelate,
}
_ON_BYTES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"jpeg": _jpeg}
# The order of the docstring's table.
CORRUPTIONS: tuple[str, ...] = (*_ON_FLOAT, *_ON_BYTES)


def _check(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise DataError(f"corruption {name!r}: expected one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 0 <= severity <= 5:
        raise DataError(f"corruption {name} severity: expected an integer 0..5, got {severity!r}")


def corrupt(frame: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    """``frame`` (uint8, H x W or H x W x C) damaged by corruption ``name`` at
    ``severity`` (1..5; 0 returns an unchanged copy), deterministic in ``seed``."""
    _check(name, severity)
    if (not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.ndim not in (2, 3)
            or 0 in frame.shape or (frame.ndim == 3 and frame.shape[2] not in (1, 3))):
        raise DataError(
            f"corruption {name}: expected a non-empty uint8 H x W or H x W x C (C = 1 or 3) frame, got "
            f"{getattr(frame, 'dtype', type(frame).__name__)} {getattr(frame, 'shape', '')}"
        )
    if severity == 0:
        return frame.copy()
    level = int(severity) - 1
    if name in _ON_BYTES:
        return _ON_BYTES[name](np.ascontiguousarray(frame), level)
    x = _ON_FLOAT[name](_float(frame), level, np.random.default_rng(seed))
    out: np.ndarray = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    return out.reshape(frame.shape)


def corrupt_images(images: np.ndarray | Sequence[np.ndarray], name: str, severity: int,
                   seeds: Sequence[int] | np.ndarray | None = None) -> np.ndarray | list[np.ndarray]:
    """Every image corrupted, image ``i`` with ``seeds[i]`` (default ``i``); a
    stacked array stays stacked, a list of frames stays a list."""
    _check(name, severity)
    keys = range(len(images)) if seeds is None else [int(k) for k in seeds]
    if len(keys) != len(images):
        raise DataError(f"corruption {name}: {len(images)} images but {len(keys)} seeds")
    frames = [corrupt(np.asarray(im), name, severity, k) for im, k in zip(images, keys)]
    if isinstance(images, np.ndarray):
        return np.stack(frames) if frames else images.copy()
    return frames


def parse_corruption(text: str) -> tuple[str, int]:
    """``"fog:3"`` -> ``("fog", 3)``, checked."""
    name, _, sev = text.partition(":")
    try:
        severity = int(sev)
    except ValueError:
        raise DataError(f"corruption {text!r}: expected NAME:SEVERITY such as fog:3") from None
    _check(name, severity)
    return name, severity
