"""MNIST for the zoo: the runtime's preprocessing and the training augmentation."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from jetsplit.datasets import load_dataset

__all__ = ["MEAN", "STD", "augment", "load_split", "preprocess"]

# MNIST's pixel mean and std on [0, 1]: the zoo.json preprocessing contract.
MEAN = 0.1307
STD = 0.3081


def preprocess(images: np.ndarray) -> np.ndarray:
    """The runtime's preprocessing contract: uint8 (N,28,28) -> float32 NCHW, standardised."""
    x = images.astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return x[:, None, :, :].astype(np.float32)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("mnist", split)
    assert isinstance(ds.images, np.ndarray)
    return preprocess(ds.images), np.asarray(ds.labels, dtype=np.int64)


def augment(x: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """Random small rotation, scale, shear and shift of a standardised batch.

    Applied in raw [0, 1] pixel space so the padding that grid_sample introduces is
    black (0), like the digits' real background, and standardised again afterwards.
    """
    n = x.shape[0]
    raw = x * STD + MEAN

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = uniform(-12.0, 12.0) * strength * math.pi / 180.0
    scale = uniform(1.0 - 0.1 * strength, 1.0 + 0.1 * strength)
    shear = uniform(-0.15, 0.15) * strength
    # affine_grid works in [-1, 1] coordinates: one pixel of 28 is 2/28.
    shift = 2.5 * strength * 2.0 / 28.0
    tx, ty = uniform(-shift, shift), uniform(-shift, shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, tx], dim=1),
            torch.stack([sin, cos + shear * sin, ty], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    raw = F.grid_sample(raw, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (raw - MEAN) / STD
