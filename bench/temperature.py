"""Does temperature scaling help a margin gate? Measured on the demo zoo.

For each edge model (little; big's head + exit) and data set (clean digits and a
few corruptions at severity 3): a temperature T fitted on calib by negative
log-likelihood (grid of 60 values, 0.2..5), and the margin gate on softmax(z / T)
against the plain one: the least calib offload reaching the cloud model's calib
accuracy, reported on test (:func:`jetsplit.calibration.gate_report.gate_figures`,
the same figures as ``gates_oracle.py``). The models run once; the gate scores
are recomputed per temperature in numpy, and wrapped in a trace.

    $ .venv/bin/python bench/temperature.py      # -> bench/results/temperature.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from calibration_seeds import INPUT, ZOO_DIR
from machine import describe

from jetsplit.calibration.builder import StageDraft, run_stages
from jetsplit.calibration.gate_report import gate_figures
from jetsplit.datasets import load_dataset
from jetsplit.gates import margin_score, softmax
from jetsplit.preprocess import Preprocess
from jetsplit.trace import Trace

RESULTS = Path(__file__).resolve().parent / "results" / "temperature.json"
DATASETS = ("mnist", "mnist-c:defocus_blur:3", "mnist-c:motion_blur:3", "mnist-c:shot_noise:3")
EDGES = {"little": ("little.onnx", "logits"), "exit": ("big_head.onnx", "exit_logits")}


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    grid = np.exp(np.linspace(np.log(0.2), np.log(5.0), 60))
    rows = np.arange(len(labels))
    nll = [-np.log(np.maximum(softmax(logits / t)[rows, labels], 1e-30)).mean() for t in grid]
    return float(grid[int(np.argmin(nll))])


def trace(edge_logits: np.ndarray, big_pred: np.ndarray, labels: np.ndarray, t: float) -> Trace:
    n = len(labels)
    score = np.stack([margin_score(softmax(edge_logits / t)), np.full(n, np.inf, np.float32)], axis=1)
    pred = np.stack([edge_logits.argmax(axis=1), big_pred], axis=1)
    zeros = np.zeros((n, 2))
    return Trace(("edge", "big"), labels, score, pred, pred, zeros, zeros, zeros, (None, None), (0.5, None))


def main() -> int:
    pre = Preprocess(**INPUT)  # type: ignore[arg-type]
    record: dict[str, Any] = {"machine": describe(), "what": __doc__.splitlines()[0] if __doc__ else "", "data": {}}
    for data in DATASETS:
        runs: dict[str, dict[str, np.ndarray]] = {}
        for split in ("calib", "test"):
            d = load_dataset(data, split)
            x = pre.batch(d.images)
            big = run_stages([StageDraft("big", ZOO_DIR / "big.onnx", "cloud", "frame", "logits")], x)[0]
            runs[split] = {"y": d.labels, "big": big["probs"].argmax(axis=1)}
            for edge, (model, scores) in EDGES.items():
                runs[split][edge] = run_stages([StageDraft(edge, ZOO_DIR / model, "edge", "frame", scores)], x)[0][scores]
        out: dict[str, Any] = {}
        for edge in EDGES:
            c, t = runs["calib"], runs["test"]
            temp = fit_temperature(c[edge], c["y"])
            figs = {name: gate_figures(trace(c[edge], c["big"], c["y"], tt), trace(t[edge], t["big"], t["y"], tt))
                    for name, tt in (("plain", 1.0), ("scaled", temp))}
            out[edge] = {"temperature": round(temp, 3),
                         **{k: {kk: (round(v, 4) if isinstance(v, float) else v) for kk, v in f.items()
                                if kk in ("test_offload", "test_accuracy", "big_test_accuracy", "offload_over_oracle",
                                          "hindsight_over_oracle", "reaches")}
                            for k, f in figs.items()}}
        record["data"][data] = out
        print(data, json.dumps(out), flush=True)
    out_path = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    out_path.write_text(json.dumps(record, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
