"""Synthetic traces for the threshold search and ``jetsplit tune``.

Random scores, correctness that rises with the score, random costs: enough to
exercise every cost kind and objective without running a model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.bundle import write_bundle
from jetsplit.trace import Trace

__all__ = ["synthetic_trace", "synthetic_tune_inputs"]


def synthetic_trace(n: int, stages: int, seed: int = 0, meta: dict[str, Any] | None = None) -> Trace:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    score = rng.random((n, stages)).astype(np.float32)
    right = rng.random((n, stages)) < 0.5 + 0.45 * score
    pred = np.where(right, labels[:, None], (labels[:, None] + 1) % 10)
    return Trace(tuple(f"m{i}" for i in range(stages)), labels, score, pred, pred,
                 rng.random((n, stages)), rng.random((n, stages)) * 1e3, rng.random((n, stages)),
                 (1,) * stages, (None,) * stages, meta or {})


def synthetic_tune_inputs(root: Path, n: int, stages: int) -> tuple[Path, Path]:
    """A bundle of ``stages`` stand-in stages (tune never opens the models) and a
    calib and a test trace of ``n`` samples for it, under ``root``; their paths."""
    stub = root / "stub.onnx"
    stub.write_bytes(b"not a model: tune never opens the models")
    manifest = {"schema": 1, "name": "synthetic", "input": {"height": 8, "width": 8, "colour": "gray"},
                "labels": {"names": [str(i) for i in range(10)]},
                "stage": [{"name": f"m{i}", "model": "stub.onnx", "where": "edge" if i < 2 else "cloud",
                           "combine": "average",
                           **({"gate": {"kind": "margin", "threshold": 0.5}} if i < stages - 1 else {})}
                          for i in range(stages)]}
    bundle = write_bundle(root / "b", manifest, {"stub.onnx": stub})
    meta = {"bundle_path": str(bundle.root), "data": "synthetic", "split": "calib"}
    calib, test = root / "calib.npz", root / "test.npz"
    synthetic_trace(n, stages, 0, meta).save(calib)
    synthetic_trace(n, stages, 1, {**meta, "split": "test"}).save(test)
    return calib, test
