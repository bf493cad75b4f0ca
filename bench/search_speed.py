"""How long ``jetsplit tune`` takes on 10,000 samples x 4 stages (issue 5: < 10 s).

Synthetic traces (random scores, correctness that rises with the score, random
costs) are tuned through the real command, end to end: load the trace and the
bundle, search every threshold set with every cost, write the bundle and the
summary. Recorded in ``bench/results/search_speed.json``.

    $ .venv/bin/python bench/search_speed.py
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.bundle import write_bundle
from jetsplit.trace import Trace

RESULTS = Path(__file__).resolve().parent / "results" / "search_speed.json"


def synthetic_trace(n: int, stages: int, seed: int = 0, meta: dict[str, Any] | None = None) -> Trace:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    score = rng.random((n, stages)).astype(np.float32)
    right = rng.random((n, stages)) < 0.5 + 0.45 * score
    pred = np.where(right, labels[:, None], (labels[:, None] + 1) % 10)
    return Trace(tuple(f"m{i}" for i in range(stages)), labels, score, pred, pred,
                 rng.random((n, stages)), rng.random((n, stages)) * 1e3, rng.random((n, stages)),
                 (1,) * stages, (None,) * stages, meta or {})


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} CPUs, Python {platform.python_version()}".strip()


def run(n: int = 10_000, stages: int = 4) -> dict[str, Any]:
    from jetsplit.calibration.search import search_thresholds
    from jetsplit.tools.tune import main as tune_main

    trace = synthetic_trace(n, stages)
    started = time.perf_counter()
    result = search_thresholds(trace, cost="time", objective="seed", alpha=0.5,
                               extra_costs=("energy", "bytes", "offload"))
    search_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        stub = root / "stub.onnx"
        stub.write_bytes(b"not a model: tune never opens the models")
        manifest = {"schema": 1, "name": "synthetic", "input": {"height": 8, "width": 8, "colour": "gray"},
                    "labels": {"names": [str(i) for i in range(10)]},
                    "stage": [{"name": f"m{i}", "model": "stub.onnx", "where": "edge" if i < 2 else "cloud",
                               "combine": "average", **({"gate": {"kind": "margin", "threshold": 0.5}} if i < stages - 1 else {})}
                              for i in range(stages)]}
        bundle = write_bundle(root / "b", manifest, {"stub.onnx": stub})
        meta = {"bundle_path": str(bundle.root), "data": "synthetic", "split": "calib"}
        synthetic_trace(n, stages, 0, meta).save(root / "calib.npz")
        synthetic_trace(n, stages, 1, {**meta, "split": "test"}).save(root / "test.npz")
        started = time.perf_counter()
        code = tune_main([str(root / "calib.npz"), "--test", str(root / "test.npz"), "--out", str(root / "tuned"),
                          "--objective", "seed", "--alpha", "0.5"])
        tune_s = time.perf_counter() - started
    return {"samples": n, "stages": stages, "threshold_sets": result.evaluated,
            "search_seconds": round(search_s, 3), "tune_command_seconds": round(tune_s, 3),
            "tune_exit_code": code, "limit_seconds": 10, "machine": machine()}


def main() -> int:
    record = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0 if record["tune_command_seconds"] < record["limit_seconds"] else 1


if __name__ == "__main__":
    sys.exit(main())
