"""Build the three demo bundles from the demo zoo (``make bundles``).

One bundle per mode, thresholds picked on the MNIST *calibration* split so that
the reported test-split figures are held out:

- ``little-big`` (Yin-Yang): little on the edge, big on the cloud, margin gate;
- ``ensemble`` (Tann et al.): four members averaged, two on the edge and two on
  the cloud, a margin gate after each;
- ``split`` (DL-gleaning): big's head with an exit on the edge, its tail on the
  cloud, carrying the block-2 activation.

Each takes the best calibration accuracy its gates can reach, at the least cost
(offload for little-big and split, compute for the ensemble) among the thresholds
that reach it.

Run as ``python -m jetsplit.tools.demo_bundles``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from jetsplit.bundle import load_bundle, write_bundle
from jetsplit.calibration.search import continue_curves, search_thresholds
from jetsplit.chain import Chain
from jetsplit.datasets import load_dataset
from jetsplit.demo import BUNDLES_DIR, ZOO_DIR
from jetsplit.trace import Trace, collect_trace

__all__ = ["build_all", "main"]

_INPUT: dict[str, Any] = {
    "height": 28,
    "width": 28,
    "colour": "gray",
    "layout": "nchw",
    "dtype": "float32",
    "scale": 1.0 / 255.0,
    "mean": [0.1307],
    "std": [0.3081],
    "interpolation": "area",
}
_LABELS = {"names": [str(i) for i in range(10)]}


def _specs(zoo: dict[str, Any]) -> dict[str, dict[str, Any]]:
    m = zoo["models"]
    gate = {"kind": "margin", "threshold": 0.5}
    return {
        "little-big": {
            "description": "Yin-Yang: little CNN on the edge, ResNet-style big CNN on the cloud, margin gate",
            "mode": "little-big",
            "wire": {"activation": "f16", "frame": "raw"},
            "stage": [
                {"name": "little", "model": "little.onnx", "where": "edge", "input": "frame",
                 "scores": "logits", "flops": m["little"]["flops"], "gate": dict(gate)},
                {"name": "big", "model": "big.onnx", "where": "cloud", "input": "frame",
                 "scores": "logits", "flops": m["big"]["flops"]},
            ],
            "cost": "offload",
        },
        "ensemble": {
            "description": "Tann et al.: four CNNs averaged, two on the edge and two on the cloud, margin gates",
            "mode": "ensemble",
            "wire": {"activation": "f16", "frame": "raw"},
            "stage": [
                {"name": f"m{i}", "model": f"ens{i}.onnx", "where": "edge" if i < 2 else "cloud",
                 "input": "frame", "scores": "logits", "combine": "average",
                 "flops": m[f"ens{i}"]["flops"], **({"gate": dict(gate)} if i < 3 else {})}
                for i in range(4)
            ],
            "cost": "flops",
        },
        "split": {
            "description": "DL-gleaning: big split after block 2, exit head on the edge, tail on the cloud",
            "mode": "split",
            "wire": {"activation": "f16", "frame": "raw"},
            "stage": [
                {"name": "head", "model": "big_head.onnx", "where": "edge", "input": "frame",
                 "scores": "exit_logits", "carry": "act", "features": "feat",
                 "flops": m["big_head"]["flops"], "gate": dict(gate)},
                {"name": "tail", "model": "big_tail.onnx", "where": "cloud", "input": "carry",
                 "scores": "logits", "flops": m["big_tail"]["flops"]},
            ],
            "cost": "offload",
        },
    }


def _trace(bundle_dir: Path, split: str) -> Trace:
    data = load_dataset("mnist", split)
    with Chain.open(load_bundle(bundle_dir), intra_op_threads=1) as chain:
        return collect_trace(chain, data.images, data.labels, batch_size=256)


def build_all(out_root: Path = BUNDLES_DIR, zoo_dir: Path = ZOO_DIR) -> dict[str, Any]:
    zoo = json.loads((zoo_dir / "zoo.json").read_text())
    summary: dict[str, Any] = {}
    for name, spec in _specs(zoo).items():
        cost = spec.pop("cost")
        manifest: dict[str, Any] = {"schema": 1, "name": name, **{k: spec[k] for k in ("description", "mode")},
                                    "input": dict(_INPUT), "labels": dict(_LABELS), "wire": spec["wire"],
                                    "stage": spec["stage"]}
        sources = {s["model"]: zoo_dir / s["model"] for s in spec["stage"]}
        with tempfile.TemporaryDirectory() as tmp:
            draft = write_bundle(Path(tmp) / name, manifest, sources)
            calib = _trace(draft.root, "calib")
        first_cloud = draft.first_cloud_stage()
        # The best calibration accuracy, and the least cost among thresholds that
        # reach it: a cascade may beat its last stage alone (the little model is
        # right on some samples the big one gets wrong), and aiming at the full
        # chain's accuracy alone leaves no margin for a held-out split.
        result = search_thresholds(calib, cost=cost, objective="max_accuracy", max_cost=float("inf"),
                                   first_cloud=first_cloud)
        for stage, thr in zip(manifest["stage"], result.chosen.thresholds):
            if thr is not None:
                stage["gate"]["threshold"] = thr
        # Every gate's threshold -> continue curve over the samples that reach it:
        # the edge's budget controller uses the one before the first cloud stage.
        for stage, curve in zip(manifest["stage"], continue_curves(calib, result.chosen.thresholds)):
            if curve is not None:
                stage["gate"]["curve_threshold"], stage["gate"]["curve_continue"] = curve
        stats = calib.cascade(result.chosen.thresholds)
        manifest["meta"] = {
            "tuned_on": "mnist@calib",
            "objective": f"best calibration accuracy, then least {cost}",
            "calib_accuracy": stats.accuracy,
            "calib_accuracy_full": calib.full().accuracy,
            "calib_exit_fraction": list(stats.exit_fraction),
        }
        out = out_root / name
        if out.exists():
            shutil.rmtree(out)
        bundle = write_bundle(out, manifest, sources)
        summary[name] = {"fingerprint": bundle.fingerprint, "thresholds": list(result.chosen.thresholds),
                         **manifest["meta"]}
    return summary


def main(argv: list[str] | None = None) -> int:
    summary = build_all()
    json.dump(summary, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
