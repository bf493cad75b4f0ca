"""Gates against the oracle, on clean digits and every corruption at severity 3.

For each data set (``mnist`` and ``mnist-c:NAME:3`` for every corruption), each
edge/cloud pair of the demo zoo (little -> big; big's head + exit -> tail) and each
gate (``--gate auto``'s candidates), built as ``jetsplit calibrate`` builds it
(learned gates fitted on that set's train split): the least calib offload whose
cascade reaches the cloud model's own calib accuracy, then on the held-out test
split the offload, the accuracy against the cloud model's, and both as a multiple
of the oracle's offload (edge wrong, cloud right). ``auto`` is the candidate
``--gate auto`` picks (least calib offload). Then the same chain with
``combine = "weighted"`` (weight tuned on calib, :mod:`jetsplit.calibration.choose`)
under the auto gate: whether pooling the edge's scores into the cloud's answer
lifts the test accuracy above the cloud model's.

    $ .venv/bin/python bench/gates_oracle.py            # -> bench/results/gates_oracle.json
    $ .venv/bin/python bench/gates_oracle.py --table    # the markdown table of docs/tuning.md
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from calibration_seeds import INPUT, ZOO_DIR, Lab
from machine import describe

from jetsplit.calibration.builder import StageDraft
from jetsplit.calibration.choose import candidates_for, tune_combination
from jetsplit.calibration.gate_report import gate_figures
from jetsplit.corruptions import CORRUPTIONS
from jetsplit.datasets import load_dataset
from jetsplit.preprocess import Preprocess

RESULTS = Path(__file__).resolve().parent / "results" / "gates_oracle.json"
DATASETS = ("mnist", *(f"mnist-c:{c}:3" for c in CORRUPTIONS))


def pairs() -> dict[str, list[StageDraft]]:
    return {
        "little-big": [StageDraft("little", ZOO_DIR / "little.onnx", "edge", "frame", "logits"),
                       StageDraft("big", ZOO_DIR / "big.onnx", "cloud", "frame", "logits")],
        "split": [StageDraft("head", ZOO_DIR / "big_head.onnx", "edge", "frame", "exit_logits", carry="act",
                             features="feat"),
                  StageDraft("tail", ZOO_DIR / "big_tail.onnx", "cloud", "carry", "logits")],
    }


def _round(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


def one(lab: Lab, data: str, pair: str, stages: list[StageDraft]) -> dict[str, Any]:
    out: dict[str, Any] = {"gates": {}}
    for gate in candidates_for(stages):
        calib, test = lab.traces(lab.bundle(f"{pair}-{gate}", stages, gate))
        out["gates"][gate] = _round(gate_figures(calib, test))
    tuned = {g: f for g, f in out["gates"].items() if f["tuned"]}
    auto = min(tuned, key=lambda g: (tuned[g]["calib_offload"], list(tuned).index(g)))
    out["auto"] = auto
    calib_set = load_dataset(data, "calib")
    x = Preprocess(**INPUT).batch(calib_set.images)  # type: ignore[arg-type]
    pooled, report = tune_combination(stages, x, calib_set.labels, 1)
    calib, test = lab.traces(lab.bundle(f"{pair}-{auto}-weighted", pooled, auto))
    figures = gate_figures(calib, test)
    out["weighted"] = _round({**figures, "weight": report[0]["weight"],
                              "calib_accuracy_combined": report[0]["calib_accuracy_combined"]})
    return out


def _cell(f: dict[str, Any]) -> str:
    if not f.get("tuned"):
        return "not reached"
    ratio = f["offload_over_oracle"]
    miss = "" if f["reaches"] else f" ({f['accuracy_vs_big_pt']:+.1f})"
    shown = "-" if ratio is None else ("no oracle case" if ratio == float("inf") else f"{ratio:.1f}x")
    return f"{100 * f['test_offload']:.1f}% ({shown}){miss}"


def table(record: dict[str, Any]) -> str:
    """The markdown table of docs/tuning.md: per data set and pair, each gate's test
    offload when tuned on calib to the cloud model's accuracy (x oracle)."""
    gates = ("margin", "maxprob", "entropy", "support", "support+carry", "dgate")
    head = ["data", "pair", "cloud / edge acc %", "oracle", *gates, "auto", "weighted: w, full-chain acc %"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for data, by_pair in record["data"].items():
        for pair, r in by_pair.items():
            any_f = next(iter(r["gates"].values()))
            w = r["weighted"]
            rows.append("| " + " | ".join([
                data, pair, f"{100 * any_f['big_test_accuracy']:.1f} / {100 * any_f.get('edge_test_accuracy', 0):.1f}",
                f"{100 * any_f.get('oracle_offload', 0):.1f}%",
                *(_cell(r["gates"][g]) if g in r["gates"] else "" for g in gates), r["auto"],
                f"{w['weight']:.3f}, {100 * w.get('chain_full_test_accuracy', 0):.1f}",
            ]) + " |")
    return "\n".join(rows)


def main() -> int:
    if sys.argv[1:2] == ["--table"]:
        print(table(json.loads((Path(sys.argv[2]) if len(sys.argv) > 2 else RESULTS).read_text())))
        return 0
    started = time.perf_counter()
    record: dict[str, Any] = {
        "machine": describe(),
        "what": "per data set, pair and gate: least calib offload reaching the cloud model's own calib accuracy, "
                "reported on test (offload, accuracy, x oracle); hindsight = least test offload at the cloud "
                "model's test accuracy with thresholds chosen on test",
        "splits": "learned gates fitted on train (3,000), thresholds and combination weights on calib (1,000), "
                  "figures on test (1,000)",
        "data": {},
    }
    with tempfile.TemporaryDirectory(prefix="gates-oracle-") as tmp:
        for data in DATASETS:
            lab = Lab(Path(tmp) / data.replace(":", "_"), data)
            record["data"][data] = {name: one(lab, data, name, [replace(s) for s in st]) for name, st in pairs().items()}
            print(data, json.dumps({p: {"auto": r["auto"], **{g: (f.get("test_offload"), f.get("offload_over_oracle"))
                                                            for g, f in r["gates"].items()}}
                                    for p, r in record["data"][data].items()}), flush=True)
    record["seconds"] = round(time.perf_counter() - started, 1)
    record["machine"]["loadavg_after"] = describe()["loadavg_1_5_15"]
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
