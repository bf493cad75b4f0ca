"""``jetsplit calibrate``: a user's ONNX models and labelled images -> a tuned bundle.

    $ jetsplit calibrate --out build/lb --data folder:photos --little little.onnx --big big.onnx
    $ jetsplit calibrate --out build/ens --data mnist --ensemble a.onnx b.onnx c.onnx d.onnx --edge-stages 2
    $ jetsplit calibrate --out build/split --data mnist --model big.onnx --cut /layer2/Relu_output_0 \\
          --gate dgate --precision int8

Splits (see :mod:`jetsplit.datasets`): learned parts (exit heads, d-gates, support
gates) are fitted on ``train``; INT8 ranges and the thresholds come from
``calib``; ``test`` is left for ``jetsplit collect`` + ``jetsplit tune`` /
``jetsplit eval`` to report on. Preprocessing defaults come from the first model's
input (size, layout, gray for 1 channel, RGB for 3) with pixels scaled to [0, 1];
every one can be overridden.

Thresholds: by default the least offload (two-stage chains) or time (longer
chains) whose calib accuracy is at most ``--max-accuracy-drop`` below running
every stage; ``--objective seed --alpha A`` uses Tann et al.'s M = a*R + (1-a)*E.
For budgets on latency, energy or bytes, re-tune with ``jetsplit tune``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.bundle import GATE_KINDS, Bundle, write_bundle
from jetsplit.datasets import DATA_HELP, load_dataset
from jetsplit.errors import ConfigError, JetsplitError
from jetsplit.preprocess import Preprocess
from jetsplit.trace import Trace

from .builder import (
    StageDraft,
    apply_precision,
    check_cuts,
    gate_kind,
    input_defaults,
    run_stages,
    stages_cuts,
    stages_ensemble,
    stages_little_big,
)
from .choose import Candidate, Draft, build_draft, candidates_for, tune_combination
from .collect import PowerModel, collect
from .graph import load_graph
from .quantize import PRECISIONS
from .search import SearchResult, continue_curves, search_thresholds

__all__ = ["calibrate", "main", "parse_preprocess"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jetsplit calibrate", description=(__doc__ or "").splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, type=Path, help="bundle directory to write")
    p.add_argument("--data", required=True, help=DATA_HELP)
    mode = p.add_argument_group("models (one of)")
    mode.add_argument("--little", type=Path, help="little model (edge); needs --big")
    mode.add_argument("--big", type=Path, help="big model (cloud); needs --little")
    mode.add_argument("--ensemble", type=Path, nargs="+", metavar="M", help="ensemble members, cheapest first")
    mode.add_argument("--model", type=Path, help="one model to cut at --cut")
    mode.add_argument("--cut", action="append", default=[], metavar="TENSOR",
                      help="cut tensor (repeatable: several exits); see `jetsplit profile`")
    p.add_argument("--edge-stages", type=int, default=1, help="ensemble members on the edge (default 1)")
    p.add_argument("--scores", help="output holding class scores (default: the model's only output)")
    pre = p.add_argument_group("preprocessing (defaults from the model's input)")
    pre.add_argument("--size", help="HxW, e.g. 224x224")
    pre.add_argument("--colour", "--color", choices=("gray", "rgb", "bgr"))
    pre.add_argument("--layout", choices=("nchw", "nhwc"))
    pre.add_argument("--scale", type=float, help="pixel multiplier before mean/std (default 1/255)")
    pre.add_argument("--mean", type=float, nargs="+", help="per-channel mean (after scaling)")
    pre.add_argument("--std", type=float, nargs="+", help="per-channel std (after scaling)")
    p.add_argument("--gate", default="margin", choices=(*GATE_KINDS, "support+carry", "auto"),
                   help="gate after every edge stage; auto tries each and keeps the least calib cost "
                        "(default margin)")
    p.add_argument("--support-hidden", type=int, default=0, help="support gate hidden units (default 0: logistic)")
    p.add_argument("--combine", choices=("replace", "average", "weighted"),
                   help="how cloud stages join the edge's scores: weighted tunes a log-linear pool on calib "
                        "(default: average for ensembles, else replace)")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--wire-activation", default="f16", choices=("raw", "f16", "i8"))
    p.add_argument("--wire-frame", default="raw", choices=("raw", "jpeg"))
    p.add_argument("--objective", default="min_cost", choices=("min_cost", "seed"))
    p.add_argument("--alpha", type=float, default=0.5, help="seed objective weight of cost (0..1)")
    p.add_argument("--max-accuracy-drop", type=float, default=0.0, help="in points, for min_cost (default 0)")
    p.add_argument("--cost", choices=("offload", "time", "energy", "bytes"),
                   help="what the threshold search minimises (default offload for 2 stages, else time)")
    p.add_argument("--name", help="bundle name (default: the output directory's name)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def parse_preprocess(args: argparse.Namespace, model: Path) -> Preprocess:
    """Preprocessing from the flags, falling back to what the model's input says."""
    d = input_defaults(model)
    if args.size:
        try:
            h, w = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size: expected HxW such as 224x224, got {args.size!r}") from None
        d.update(height=h, width=w)
    for key in ("colour", "layout"):
        if getattr(args, key):
            d[key] = getattr(args, key)
    if "height" not in d or d.get("height") is None or d.get("width") is None:
        raise ConfigError(f"{model.name}: its input has no fixed height and width; give --size HxW")
    if "layout" not in d:
        raise ConfigError(f"{model.name}: cannot tell the input layout from its shape; give --layout and --colour")
    return Preprocess(height=int(d["height"]), width=int(d["width"]), colour=d.get("colour", "rgb"),
                      layout=d["layout"], dtype=d.get("dtype", "float32"),
                      scale=1.0 / 255.0 if args.scale is None else args.scale,
                      mean=tuple(args.mean or (0.0,)), std=tuple(args.std or (1.0,)))


def _input_table(pre: Preprocess) -> dict[str, Any]:
    return {"height": pre.height, "width": pre.width, "colour": pre.colour, "layout": pre.layout,
            "dtype": pre.dtype, "scale": pre.scale, "mean": list(pre.mean), "std": list(pre.std),
            "interpolation": pre.interpolation}


def _mode(args: argparse.Namespace) -> str:
    chosen = [m for m, on in (("little-big", args.little or args.big), ("ensemble", args.ensemble),
                              ("split", args.model)) if on]
    if len(chosen) != 1:
        raise ConfigError("models: give exactly one of --little/--big, --ensemble M M ..., or --model M --cut T")
    if chosen[0] == "little-big" and not (args.little and args.big):
        raise ConfigError("--little and --big go together")
    if chosen[0] == "split" and not args.cut:
        raise ConfigError("--model needs at least one --cut TENSOR (list candidates with `jetsplit profile`)")
    for path in [args.little, args.big, args.model, *(args.ensemble or [])]:
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"model file {str(path)!r}: no such file")
    return chosen[0]


def _toml_safe(value: Any) -> Any:
    """TOML has no null: drop Nones, recurse into dicts and lists."""
    if isinstance(value, dict):
        return {str(k): _toml_safe(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_safe(v) for v in value if v is not None]
    if isinstance(value, np.generic):
        return value.item()
    return value


def calibrate(args: argparse.Namespace) -> tuple[Bundle, dict[str, Any]]:
    """Build, fit, convert, tune and write; returns the bundle and a summary."""
    mode = _mode(args)
    if mode == "split":  # a typo in a cut is reported before any image is processed
        check_cuts(load_graph(args.model), args.cut)
    first = args.little or (args.ensemble[0] if args.ensemble else args.model)
    pre = parse_preprocess(args, first)
    train, calib = load_dataset(args.data, "train"), load_dataset(args.data, "calib")
    if len(train) == 0 or len(calib) == 0:
        raise ConfigError(f"dataset {args.data!r}: the train or calib split is empty (too few images per class)")
    names = train.class_names
    num_classes = len(names)
    train_x, calib_x = pre.batch(train.images), pre.batch(calib.images)
    with tempfile.TemporaryDirectory(prefix="jetsplit-calibrate-") as tmp:
        work = Path(tmp)
        stages: list[StageDraft]
        if mode == "little-big":
            stages = stages_little_big(args.little, args.big, args.scores)
        elif mode == "ensemble":
            stages = stages_ensemble(args.ensemble, args.scores, args.edge_stages)
        else:
            stages = stages_cuts(args.model, args.cut, args.scores, train_x, train.labels, num_classes, work, args.data)
        if args.combine == "weighted":
            first_cloud_draft = next((i for i, st in enumerate(stages) if st.where == "cloud"), 1)
            stages, combination = tune_combination(stages, calib_x, calib.labels, first_cloud_draft)
        else:
            combination = []
            if args.combine is not None:
                stages = [stages[0], *(replace(st, combine=args.combine) for st in stages[1:])]
        gates = candidates_for(stages) if args.gate == "auto" else (args.gate,)
        learned = any(gate_kind(g) in ("dgate", "support") for g in gates)
        train_out = run_stages(stages, train_x) if learned else []
        for st, o in zip(stages, train_out or run_stages(stages, calib_x[:2])):
            if o["probs"].shape[1] != num_classes:
                raise ConfigError(f"stage {st.name!r} output {st.scores!r} has {o['probs'].shape[1]} classes, "
                                  f"the data {num_classes} ({', '.join(names[:5])}...)")
        stages, shifts = apply_precision(stages, args.precision, calib_x, calib.labels, work)
        base: dict[str, Any] = {
            "schema": 1, "name": args.name or args.out.resolve().name, "mode": mode, "precision": args.precision,
            "input": _input_table(pre), "labels": {"names": list(names)},
            "wire": {"activation": args.wire_activation, "frame": args.wire_frame},
        }
        tried: list[dict[str, Any]] = []
        best: tuple[float, Draft, Trace, SearchResult] | None = None
        for gate in gates:
            describe = f"{mode} calibrated by jetsplit on {args.data}, {gate} gates, {args.precision}"
            try:
                draft = build_draft(stages, gate, train_out, train.labels, num_classes, work,
                                    {**base, "description": describe}, args.support_hidden)
                trace = collect(draft.bundle, args.data, "calib", PowerModel(), batch_size=1,
                                progress=sys.stderr.isatty())
                first_cloud = draft.bundle.first_cloud_stage()
                cost = args.cost or ("offload" if len(stages) == 2 and first_cloud is not None else "time")
                result = search_thresholds(
                    trace, cost=cost, objective=args.objective, alpha=args.alpha,
                    min_accuracy=trace.full().accuracy - args.max_accuracy_drop / 100.0, first_cloud=first_cloud,
                    extra_costs=("offload",) if first_cloud is not None else (),
                )
            except JetsplitError as exc:
                if len(gates) == 1:
                    raise
                tried.append({"gate": gate, "error": str(exc)})
                continue
            st_calib = trace.cascade(result.chosen.thresholds)
            off = float((st_calib.exit_stage >= first_cloud).mean()) if first_cloud is not None else None
            tried.append(Candidate(gate, result.chosen.cost, st_calib.accuracy, off, result.chosen.thresholds).as_dict())
            if best is None or result.chosen.cost < best[0] - 1e-12:
                best = (result.chosen.cost, draft, trace, result)
        if best is None:
            raise ConfigError("--gate auto: no candidate gate could be tuned: "
                              + "; ".join(f"{t['gate']}: {t['error']}" for t in tried))
        _, chosen, trace, result = best
        chosen_gate, stages, manifest, sources = chosen.gate, chosen.stages, chosen.manifest, chosen.sources
        tables = manifest["stage"]
        first_cloud = chosen.bundle.first_cloud_stage()
        cost = result.cost_kind
        full_acc = trace.full().accuracy
        thresholds = result.chosen.thresholds
        stats = trace.cascade(thresholds)
        for table, thr, curve in zip(tables, thresholds, continue_curves(trace, thresholds)):
            if thr is None or curve is None or "gate" not in table:
                continue
            table["gate"]["threshold"] = float(thr)
            table["gate"]["curve_threshold"], table["gate"]["curve_continue"] = curve
        offload = float((stats.exit_stage >= first_cloud).mean()) if first_cloud is not None else None
        summary: dict[str, Any] = {
            "bundle": str(args.out), "mode": mode, "gate": chosen_gate, "precision": args.precision,
            "gate_asked": args.gate, "gate_candidates": tried, "combination": combination,
            "tuned_on": f"{args.data}@calib", "objective": args.objective, "cost": cost,
            "alpha": args.alpha if args.objective == "seed" else None,
            "thresholds": list(thresholds), "calib_accuracy": stats.accuracy, "calib_accuracy_full": full_acc,
            "calib_offload": offload, "calib_exit_fraction": list(stats.exit_fraction),
            "calib_mean_time_ms": stats.mean_time_ms,
            "stage_accuracy_alone": [float(a) for a in trace.own_correct.mean(axis=0)],
            "precision_shift": [s.as_dict() for s in shifts],
            "stages": {st.name: st.info for st in stages if st.info},
        }
        manifest["meta"] = _toml_safe({k: v for k, v in summary.items() if k != "bundle"})
        bundle = write_bundle(args.out, manifest, sources)
    return bundle, summary


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    bundle, summary = calibrate(args)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    off = summary["calib_offload"]
    print(f"bundle {bundle.name!r} -> {bundle.root} (fingerprint {bundle.fingerprint[:12]})")
    print(f"  {summary['mode']}, {summary['gate']} gates, {summary['precision']}; thresholds "
          + ", ".join("-" if t is None else f"{t:.4g}" for t in summary["thresholds"]))
    print(f"  calib: accuracy {100 * summary['calib_accuracy']:.2f}% (every stage {100 * summary['calib_accuracy_full']:.2f}%)"
          + ("" if off is None else f", offload {100 * off:.1f}%"))
    for s in summary["precision_shift"]:
        print(f"  {s['precision']} {s['stage']}: accuracy {100 * s['accuracy']:.2f}% "
              f"({100 * s['accuracy_delta']:+.2f} pt vs fp32), mean |margin shift| {s['mean_abs_margin_shift']:.4f}")
    for c in summary["gate_candidates"] if summary["gate_asked"] == "auto" else ():
        mark = "*" if c["gate"] == summary["gate"] else " "
        if "error" in c:
            print(f"  {mark} {c['gate']:<14} not tuned: {c['error']}")
        else:
            off = "" if c["calib_offload"] is None else f", offload {100 * c['calib_offload']:.1f}%"
            print(f"  {mark} {c['gate']:<14} calib {summary['cost']} {c['calib_cost']:.4g}, "
                  f"accuracy {100 * c['calib_accuracy']:.2f}%{off}")
    for c in summary["combination"]:
        print(f"  combine {c['stage']}: weighted, own weight {c['weight']:.3f}; calib accuracy "
              f"{100 * c['calib_accuracy_alone']:.2f}% alone -> {100 * c['calib_accuracy_combined']:.2f}% combined")
    print("  next: jetsplit collect BUNDLE --data ... --split calib/test, then jetsplit tune (docs/tuning.md)")
    return 0
