"""``jetsplit report BUNDLE [--trace TRACE ...] --out report.md|report.html``.

One page for a tuned bundle: what it is (stages, gates, thresholds, precision,
wire), how it was tuned (the bundle's ``[meta]`` and ``tuning.json`` if ``jetsplit
tune`` wrote one), and for every trace given (typically the held-out ``test``
trace): accuracy, offload, latency, energy and bytes at the bundle's thresholds,
each stage alone, the oracle comparison, the Pareto front, and the plots.

Markdown links the PNGs, written next to the report; HTML embeds them, so the
page travels as one file (tools/document.py renders both from the same blocks).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jetsplit.bundle import Bundle, load_bundle
from jetsplit.calibration.search import (
    candidate_thresholds,
    default_grid,
    evaluate_grid,
    pareto_front,
)
from jetsplit.errors import ConfigError
from jetsplit.trace import Trace

from .document import Block, Code, Figure, Heading, Items, Para, Pre, Table, to_html, to_markdown
from .plots import write_plots
from .tune import check_same_models, split_stats

__all__ = ["main", "render"]

_FRONT_ROWS = 15


def _pct(v: float | None, digits: int = 2) -> str | None:
    return None if v is None else f"{100 * v:.{digits}f}%"


def _about(bundle: Bundle) -> list[Block]:
    pre = bundle.preprocess
    blocks: list[Block] = [Heading(1, f"jetsplit report: {bundle.name}")]
    if bundle.description:
        blocks.append(Para(bundle.description))
    blocks.append(Items((
        ("fingerprint ", Code(bundle.fingerprint)),
        f"precision {bundle.precision}; wire: activations {bundle.wire.activation}, frames {bundle.wire.frame}",
        f"input {pre.height}x{pre.width} {pre.colour} {pre.layout}; {bundle.num_classes} classes",
    )))
    blocks += [Heading(2, "Stages"), Table(
        ("stage", "where", "input", "model", "scores", "gate", "threshold"),
        tuple((s.name, s.where, s.input, s.model, s.scores, s.gate.kind if s.gate else "-",
               s.gate.threshold if s.gate else None) for s in bundle.stages),
        numeric=frozenset({6}))]
    if bundle.extra:
        blocks += [Heading(2, "Tuning"), Table(("key", "value"), tuple(
            (k, json.dumps(v) if isinstance(v, (list, dict)) else v)
            for k, v in bundle.extra.items() if not isinstance(v, dict)))]
    return blocks


def _on_trace(bundle: Bundle, trace: Trace, out: Path) -> list[Block]:
    first_cloud = bundle.first_cloud_stage()
    label = f"{trace.meta.get('data')}@{trace.meta.get('split')}"
    st = split_stats(trace, bundle.thresholds(), first_cloud)
    blocks: list[Block] = [Heading(2, f"On {label} (n = {trace.n})"), Table(
        ("thresholds", "accuracy", "offload", "latency ms", "energy mJ", "bytes"),
        (("the bundle's", _pct(st["accuracy"]), _pct(st["offload"], 1), st["mean_time_ms"],
          st["mean_energy_mj"], st["mean_bytes"]),
         ("every stage", _pct(st["accuracy_full"]), None, st["time_full_ms"], st["energy_full_mj"], st["bytes_full"])),
        numeric=frozenset(range(1, 6)))]
    blocks.append(Table(("stage", "exits here", "accuracy alone"), tuple(
        (n, _pct(e, 1), _pct(a)) for n, e, a in zip(trace.stage_names, st["exit_fraction"], st["stage_accuracy_alone"])),
        numeric=frozenset({1, 2})))
    if st["oracle"]:
        o = st["oracle"]
        blocks.append(Para(
            f"Oracle: offloading only what the edge gets wrong and the cloud right needs "
            f"{100 * o['oracle_offload']:.1f}% offload; the gate needs {100 * o['gate_offload_at_final_accuracy']:.1f}% "
            f"for the final stage's accuracy ({o['gate_over_oracle']:.2f}x the oracle). A perfect gate could "
            f"reach {100 * o['oracle_accuracy']:.2f}% (final stage {100 * o['final_accuracy']:.2f}%)."))
    # The grid includes the bundle's own thresholds, so its point can be marked.
    thr = bundle.thresholds()
    size = default_grid(trace.num_stages)
    cands = [np.union1d(candidate_thresholds(trace.score[:, s], size), [thr[s] if thr[s] is not None else np.inf])
             for s in range(trace.num_stages - 1)]
    grid = evaluate_grid(trace, ("time", "energy", "bytes", "offload"), first_cloud, candidates=cands)
    front = pareto_front(grid, "time")
    step = max(1, len(front) // _FRONT_ROWS)
    blocks += [Para("Pareto front (accuracy against latency):"), Table(
        ("thresholds", "accuracy", "latency ms"),
        tuple((", ".join("-" if t is None else f"{t:.3g}" for t in p.thresholds), _pct(p.accuracy), p.cost)
              for p in front[::step]),
        numeric=frozenset({1, 2}))]
    want = np.array([np.inf if t is None else t for t in thr[:-1]])
    chosen = int(np.flatnonzero((grid.thresholds[:, :-1] == want).all(axis=1))[0]) if len(want) else 0
    plot_dir = out.parent / f"{out.stem}_files" / str(trace.meta.get("split", "trace"))
    margins, tradeoffs = write_plots(trace, grid, chosen, plot_dir, title=label, oracle=st["oracle"])
    blocks += [
        Figure(margins, "Gate scores of right and wrong answers per gated stage (log count axis), with the "
                        "bundle's threshold: wrong answers above it are accepted, right ones below it sent on."),
        Figure(tradeoffs, "Accuracy against latency, energy, uplink bytes and offload for every threshold set "
                          "(grey), the Pareto front, the bundle's thresholds (star) and every stage run (square); "
                          "on the offload panel the oracle's offload for the final stage's accuracy."),
    ]
    return blocks


def render(bundle: Bundle, traces: Sequence[Path], out: Path) -> tuple[list[Block], list[Path]]:
    """The report's blocks and the images they show (written under ``out``'s folder)."""
    blocks = _about(bundle)
    stages = tuple(s.name for s in bundle.stages)
    for path in traces:
        trace = Trace.load(path)
        if trace.stage_names != stages:
            raise ConfigError(f"trace {str(path)!r} has stages {list(trace.stage_names)}, the bundle {list(stages)}")
        check_same_models(trace, bundle.files, f"trace {str(path)!r}")
        blocks += _on_trace(bundle, trace, out)
    images = [b.path for b in blocks if isinstance(b, Figure)]
    return blocks, images


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit report", description=(__doc__ or "").splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--trace", type=Path, action="append", default=[], help="trace to report on (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="report.md or report.html")
    args = p.parse_args(list(argv))
    if args.out.suffix not in (".md", ".html"):
        raise ConfigError(f"--out: expected a .md or .html file, got {str(args.out)!r}")
    bundle = load_bundle(args.bundle)
    try:
        args.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out: cannot create the folder {str(args.out.parent)!r}: {exc.strerror}") from None
    blocks, _ = render(bundle, args.trace, args.out)
    tuning = bundle.root / "tuning.json"
    if tuning.is_file() and not args.trace:
        blocks += [Heading(2, "Tuning summary"), Pre(tuning.read_text())]
    if args.out.suffix == ".html":
        text = to_html(blocks, f"jetsplit report: {bundle.name}")
    else:
        text = to_markdown(blocks, args.out.parent)
    args.out.write_text(text)
    print(f"report -> {args.out}")
    return 0
