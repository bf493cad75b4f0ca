"""Image folders of real digits for the agent's folder source, shared by the edge,
system and tool tests."""

from __future__ import annotations

from pathlib import Path

import cv2

from jetsplit.datasets import load_dataset


def digits_folder(root: Path, n: int, split: str = "test") -> Path:
    """``n`` scikit-learn digits of ``split`` as PNG files under ``root``, one
    sub-folder per class (so each result carries its ``truth``); the split is
    repeated when ``n`` exceeds it. Returns ``root``."""
    data = load_dataset("digits", split)
    for i in range(n):
        j = i % len(data)
        folder = root / data.class_names[data.labels[j]]
        folder.mkdir(parents=True, exist_ok=True)
        if not cv2.imwrite(str(folder / f"{i:05d}.png"), data.images[j]):
            raise OSError(f"could not write {folder / f'{i:05d}.png'}")
    return root
