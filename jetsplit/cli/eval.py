"""``jetsplit eval BUNDLE --data SPEC [--split S] [--json]``.

Runs the bundle's chain over a labelled split and reports accuracy, the fraction
of samples that exit at each stage, mean time per sample, and the same figures for
every sample running every stage (``_full``) and for each stage alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from jetsplit.bundle import load_bundle
from jetsplit.chain import Chain
from jetsplit.chance import near_chance
from jetsplit.datasets import (
    DATA_HELP,
    SPLITS,
    check_classes,
    labels_for,
    load_dataset,
    parse_labels,
)
from jetsplit.trace import Trace, collect_trace

__all__ = ["evaluate", "format_table", "main"]


def evaluate(bundle_spec: str, data: str, split: str = "test", batch_size: int = 1,
             backend: str = "onnxruntime", threads: int = 1, progress: bool = False,
             labels: Sequence[str] | None = None) -> dict[str, Any]:
    """The figures ``jetsplit eval`` prints, as a dict. ``labels``: a folder
    dataset's class names in label order (default: the bundle's, if they name
    every sub-folder, else sorted). A near-chance accuracy is warned on stderr."""
    bundle = load_bundle(bundle_spec)
    dataset = load_dataset(data, split, labels_for(data, bundle.labels, labels))
    check_classes(dataset, data, bundle.name, bundle.num_classes, strict=False)
    options: dict[str, Any] = {"intra_op_threads": threads} if backend == "onnxruntime" else {}
    with Chain.open(bundle, backend=backend, **options) as chain:
        trace = collect_trace(chain, dataset.images, dataset.labels, batch_size=batch_size, progress=progress)
    result = summarise(trace, bundle_name=bundle.name, fingerprint=bundle.fingerprint, data=dataset.name,
                       first_cloud=bundle.first_cloud_stage())
    warning = near_chance(result["accuracy"], dataset.labels, f"{dataset.name} with bundle {bundle.name!r}")
    if warning:
        print(warning, file=sys.stderr)
    return result


def summarise(trace: Trace, bundle_name: str, fingerprint: str, data: str, first_cloud: int | None) -> dict[str, Any]:
    cas = trace.cascade()
    full = trace.full()
    alone = trace.own_correct.mean(axis=0) if trace.n else [0.0] * trace.num_stages
    stages = [
        {
            "name": name,
            "exit_fraction": cas.exit_fraction[s],
            "accuracy_alone": float(alone[s]),
            "time_ms": float(trace.time_ms[:, s].mean()) if trace.n else 0.0,
            "threshold": trace.thresholds[s],
            "flops": trace.flops[s],
        }
        for s, name in enumerate(trace.stage_names)
    ]
    offload = None
    if first_cloud is not None:
        offload = float((cas.exit_stage >= first_cloud).mean()) if trace.n else 0.0
    result: dict[str, Any] = {
        "bundle": bundle_name,
        "fingerprint": fingerprint,
        "data": data,
        "n": trace.n,
        "accuracy": cas.accuracy,
        "mean_time_ms": cas.mean_time_ms,
        "accuracy_full": full.accuracy,
        "time_full_ms": full.mean_time_ms,
        "offload_fraction": offload,
        "mean_flops": cas.mean_flops,
        "flops_full": full.mean_flops,
        "stages": stages,
    }
    return result


def format_table(results: Sequence[dict[str, Any]]) -> str:
    head = f"{'bundle':<12} {'n':>5} {'acc %':>7} {'full %':>7} {'ms/img':>7} {'full ms':>7} {'offload':>7} {'flops %':>7}  exits per stage"
    lines = [head, "-" * len(head)]
    for r in results:
        flops = "" if not r["mean_flops"] or not r["flops_full"] else f"{100 * r['mean_flops'] / r['flops_full']:.1f}"
        offload = "" if r["offload_fraction"] is None else f"{100 * r['offload_fraction']:.1f}%"
        exits = "  ".join(f"{s['name']}:{100 * s['exit_fraction']:.1f}%" for s in r["stages"])
        lines.append(
            f"{r['bundle']:<12} {r['n']:>5} {100 * r['accuracy']:>7.2f} {100 * r['accuracy_full']:>7.2f} "
            f"{r['mean_time_ms']:>7.3f} {r['time_full_ms']:>7.3f} {offload:>7} {flops:>7}  {exits}"
        )
    lines.append("")
    lines.append("per stage alone (every sample):")
    for r in results:
        alone = "  ".join(f"{s['name']} {100 * s['accuracy_alone']:.2f}% {s['time_ms']:.3f}ms" for s in r["stages"])
        lines.append(f"  {r['bundle']:<12} {alone}")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jetsplit eval", description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("bundle", nargs="+", help="bundle directory or demo:NAME (several allowed)")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="test", choices=SPLITS)
    p.add_argument("--labels", metavar="NAMES",
                   help="folder: datasets: the class sub-folders in the model's label order, comma-separated "
                        "(default: the bundle's labels if they name every sub-folder, else sorted by name)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--batch-size", type=int, default=1, help="1 times each frame as it runs online")
    p.add_argument("--backend", default="onnxruntime")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    results = [
        evaluate(b, args.data, args.split, args.batch_size, args.backend, args.threads, progress=sys.stderr.isatty(),
                 labels=parse_labels(args.labels))
        for b in args.bundle
    ]
    if args.json:
        print(json.dumps(results[0] if len(results) == 1 else results, indent=2))
    else:
        print(format_table(results))
    return 0
