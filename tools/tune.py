"""``jetsplit tune CALIB_TRACE --test TEST_TRACE --out BUNDLE``: thresholds from traces.

Tune on one split, report on another: collect a trace of the bundle on ``calib``
and one on ``test`` (``jetsplit collect``), then

    $ jetsplit tune calib.npz --test test.npz --out tuned --objective seed --alpha 0.5
    $ jetsplit tune calib.npz --test test.npz --out tuned --max-latency-ms 4 --max-offload 0.3
    $ jetsplit tune calib.npz --test test.npz --out tuned --max-accuracy-drop 0.5 --cost energy

Objectives (thresholds are chosen on the calib trace only):

- ``--objective seed --alpha A``: least M = A*R + (1-A)*E (Tann et al.), R the
  cost (``--cost``, default time) relative to running every stage, E the relative
  increase in error;
- ``--max-accuracy-drop PT``: the least cost within PT points of every stage's
  accuracy;
- budgets alone (``--max-latency-ms``, ``--max-energy-mj``, ``--max-offload``,
  ``--max-bytes``): the best accuracy within all of them. Budgets also bound the
  other two objectives.
- nothing: the least cost at every stage's accuracy.

Output: a bundle (the source bundle's files, new thresholds and each gate's
threshold -> fraction-continuing curve for the edge's budget controller),
the Pareto front, a JSON summary (``--summary``, default ``BUNDLE/tuning.json``)
and with ``--plots DIR`` PNGs of score histograms and trade-offs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.bundle import MANIFEST, Bundle, file_sha256, load_bundle, write_bundle
from jetsplit.calibration.search import (
    COST_KINDS,
    Objective,
    SearchResult,
    continue_curves,
    oracle_comparison,
    search_thresholds,
)
from jetsplit.errors import BundleError, ConfigError
from jetsplit.fieldtrace import read_any_trace
from jetsplit.manifest import read_toml
from jetsplit.trace import Trace

__all__ = ["check_same_models", "main", "split_stats", "tune"]

_BUDGET_FLAGS = (("max_latency_ms", "time"), ("max_energy_mj", "energy"), ("max_offload", "offload"),
                 ("max_bytes", "bytes"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jetsplit tune", description=(__doc__ or "").splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace", type=Path, help="trace of the calib split (jetsplit collect --split calib)")
    p.add_argument("--test", "--trace-test", type=Path, help="trace of a held-out split to report on")
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    p.add_argument("--bundle", help="source bundle (default: the one the trace was collected from)")
    p.add_argument("--objective", choices=("seed", "min_cost", "max_accuracy"))
    p.add_argument("--alpha", type=float, default=0.5, help="seed: weight of cost against error (0..1)")
    p.add_argument("--cost", default="time", choices=COST_KINDS, help="what to minimise (default time)")
    p.add_argument("--max-latency-ms", type=float)
    p.add_argument("--max-energy-mj", type=float)
    p.add_argument("--max-offload", type=float, help="fraction of samples sent to the cloud (0..1)")
    p.add_argument("--max-bytes", type=float, help="mean uplink bytes per sample")
    p.add_argument("--max-accuracy-drop", type=float, help="points below every stage's accuracy")
    p.add_argument("--grid", type=int, help="candidate thresholds per gate (default adaptive)")
    p.add_argument("--plots", type=Path, metavar="DIR", help="write PNG plots here")
    p.add_argument("--summary", type=Path, help="JSON summary (default BUNDLE/tuning.json)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def split_stats(trace: Trace, thresholds: Sequence[float | None], first_cloud: int | None) -> dict[str, Any]:
    """What these thresholds do on one trace."""
    cas, full = trace.cascade(thresholds), trace.full()
    offload = float((cas.exit_stage >= first_cloud).mean()) if first_cloud is not None else None
    return {
        "split": trace.meta.get("split"), "data": trace.meta.get("data"), "n": trace.n,
        "accuracy": cas.accuracy, "accuracy_full": full.accuracy, "offload": offload,
        "mean_time_ms": cas.mean_time_ms, "time_full_ms": full.mean_time_ms,
        "mean_energy_mj": cas.mean_energy_mj, "energy_full_mj": full.mean_energy_mj,
        "mean_bytes": cas.mean_bytes, "bytes_full": full.mean_bytes,
        "exit_fraction": list(cas.exit_fraction),
        "stage_accuracy_alone": [float(a) for a in trace.own_correct.mean(axis=0)],
        "oracle": oracle_comparison(trace, first_cloud),
    }


def check_same_models(trace: Trace, files: dict[str, str], what: str) -> None:
    """ConfigError if ``trace`` was collected on other model files than ``files``."""
    traced = trace.meta.get("files")
    if isinstance(traced, dict) and traced:
        models = {k: v for k, v in traced.items()}
        changed = sorted(k for k, v in models.items() if files.get(k) not in (None, v))
        if changed:
            raise ConfigError(f"{what} was collected on other model files than the bundle's ({', '.join(changed)}): "
                              "collect it again on this bundle")


def _check_field_tunable(bundle: Bundle, first_cloud: int | None, args: argparse.Namespace) -> None:
    """A field trace knows the gate before the cloud only (jetsplit.fieldtrace)."""
    gated = [s.name for s in bundle.stages if s.gate is not None]
    gate = bundle.stages[first_cloud - 1].name if first_cloud else None
    if gated != [gate]:
        raise ConfigError(f"{args.trace}: a field trace re-tunes only the gate before the cloud ({gate!r}); "
                          f"bundle {bundle.name!r} has gates on {gated}: re-tune it from a collected trace")
    if args.max_accuracy_drop is None and args.objective is None:
        raise ConfigError(f"{args.trace}: a field trace is labelled by the cloud, so every stage's accuracy is 100%: "
                          "give --max-accuracy-drop PT (the points of disagreement with the cloud to allow)")


def tune(args: argparse.Namespace) -> tuple[dict[str, Any], SearchResult, Trace]:
    calib = read_any_trace(args.trace)
    source = args.bundle or calib.meta.get("bundle_path")
    if not source:
        raise ConfigError(f"{args.trace}: the trace does not name its bundle; give --bundle")
    bundle = load_bundle(str(source))
    if tuple(s.name for s in bundle.stages) != calib.stage_names:
        raise ConfigError(f"bundle {bundle.name!r} has stages {[s.name for s in bundle.stages]}, the trace {list(calib.stage_names)}")
    check_same_models(calib, bundle.files, str(args.trace))
    first_cloud = bundle.first_cloud_stage()
    if calib.meta.get("field"):
        _check_field_tunable(bundle, first_cloud, args)
    budgets = {kind: getattr(args, flag) for flag, kind in _BUDGET_FLAGS if getattr(args, flag) is not None}
    objective: Objective = args.objective or ("min_cost" if args.max_accuracy_drop is not None or not budgets else "max_accuracy")
    full_acc = calib.full().accuracy
    drop = (args.max_accuracy_drop or 0.0) / 100.0
    if not 0.0 <= args.alpha <= 1.0:
        raise ConfigError(f"--alpha: expected 0..1, got {args.alpha}")
    extra = [k for k in ("time", "energy", "bytes", "offload") if k != args.cost]
    started = time.perf_counter()
    result = search_thresholds(calib, cost=args.cost, objective=objective, alpha=args.alpha,
                               min_accuracy=full_acc - drop, first_cloud=first_cloud, grid=args.grid,
                               budgets=budgets, extra_costs=extra)
    elapsed = time.perf_counter() - started
    thresholds = result.chosen.thresholds
    summary: dict[str, Any] = {
        "bundle": str(args.out), "source_bundle": str(bundle.root), "objective": objective, "cost": args.cost,
        "alpha": args.alpha if objective == "seed" else None, "budgets": budgets,
        "max_accuracy_drop_pt": args.max_accuracy_drop, "thresholds": list(thresholds),
        "evaluated": result.evaluated, "search_seconds": elapsed,
        "calib": split_stats(calib, thresholds, first_cloud),
        "front": [{"thresholds": list(p.thresholds), "accuracy": p.accuracy, "cost": p.cost} for p in result.front],
    }
    if args.test is not None:
        test = read_any_trace(args.test)
        if test.stage_names != calib.stage_names:
            raise ConfigError(f"{args.test}: stages {list(test.stage_names)} differ from the calib trace's")
        check_same_models(test, bundle.files, str(args.test))
        summary["test"] = split_stats(test, thresholds, first_cloud)
        same = test.meta.get("split") == calib.meta.get("split") and test.meta.get("data") == calib.meta.get("data")
        summary["held_out"] = not same
    else:
        summary["held_out"] = False
    _write_bundle(bundle.root, args.out, calib, thresholds, summary)
    return summary, result, calib


def _write_bundle(src: Path, out: Path, calib: Trace, thresholds: Sequence[float | None], summary: dict[str, Any]) -> None:
    raw = read_toml(src / MANIFEST, BundleError)
    sources = {name: src / name for name in raw.get("files", {})}
    for name, path in sources.items():
        if file_sha256(path) != raw["files"][name]:
            raise BundleError(f"bundle {str(src)!r}: file {name!r} changed after hashing")
    for table, thr, curve in zip(raw["stage"], thresholds, continue_curves(calib, thresholds)):
        if thr is None or curve is None or "gate" not in table:
            continue
        table["gate"]["threshold"] = float(thr)
        table["gate"]["curve_threshold"], table["gate"]["curve_continue"] = curve
    held = summary.get("test") or summary["calib"]
    meta = dict(raw.get("meta", {}))
    meta.update({"tuned_on": f"{calib.meta.get('data')}@{calib.meta.get('split')}", "objective": summary["objective"],
                 "cost": summary["cost"], "calib_accuracy": summary["calib"]["accuracy"],
                 "reported_on": f"{held.get('data')}@{held.get('split')}", "reported_accuracy": held["accuracy"]})
    if held.get("offload") is not None:
        meta["reported_offload"] = held["offload"]
    if not calib.meta.get("field"):
        # What the field monitor's shadow audit expects (jetsplit.edge.monitor):
        # the accuracy of the answers the edge keeps, and the cloud's own.
        first_cloud = next((i for i, t in enumerate(raw["stage"]) if t.get("where") == "cloud"), None)
        if first_cloud:
            exits = calib.cascade(thresholds).exit_stage
            kept = exits < first_cloud
            if kept.any():
                meta["calib_edge_accuracy"] = float(calib.correct[kept, exits[kept]].mean())
            meta["calib_cloud_accuracy"] = float(calib.own_correct[:, -1].mean())
    raw["meta"] = meta
    write_bundle(out, raw, sources)


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    summary, result, calib = tune(args)
    summary_path = args.summary or args.out / "tuning.json"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    if args.plots is not None:
        from .plots import write_plots

        assert result.grid is not None  # search_thresholds always keeps it
        plots = write_plots(calib, result.grid, result.chosen_index, args.plots,
                            title=f"{calib.meta.get('bundle')} @ calib", oracle=summary["calib"]["oracle"])
        summary["plots"] = [str(p) for p in plots]
    summary_path.write_text(json.dumps(summary, indent=2, default=_json_default))
    if args.json:
        print(json.dumps(summary, indent=2, default=_json_default))
        return 0
    print(f"tuned {summary['source_bundle']} -> {args.out} ({summary['objective']}, cost {summary['cost']}; "
          f"{summary['evaluated']} threshold sets in {summary['search_seconds']:.2f} s)")
    print("  thresholds: " + ", ".join("-" if t is None else f"{t:.4g}" for t in summary["thresholds"]))
    for key in ("calib", "test"):
        s = summary.get(key)
        if s is None:
            continue
        print(f"  {key:<5} ({s['data']}@{s['split']}, n={s['n']}): accuracy {_pct(s['accuracy'])} "
              f"(every stage {_pct(s['accuracy_full'])}), offload {_pct(s['offload'])}, "
              f"{s['mean_time_ms']:.3f} ms, {s['mean_energy_mj']:.3f} mJ, {s['mean_bytes']:.0f} B per sample")
    if not summary["held_out"]:
        print("  warning: no held-out trace (--test): the figures above are on the split the thresholds were tuned on",
              file=sys.stderr)
    print(f"  Pareto front: {len(summary['front'])} points; summary -> {summary_path}")
    return 0


def _json_default(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")
