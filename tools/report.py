"""``jetsplit report BUNDLE [--trace TRACE ...] --out report.md|report.html``.

One page for a tuned bundle: what it is (stages, gates, thresholds, precision,
wire), how it was tuned (the bundle's ``[meta]`` and ``tuning.json`` if ``jetsplit
tune`` wrote one), and for every trace given (typically the held-out ``test``
trace): accuracy, offload, latency, energy and bytes at the bundle's thresholds,
each stage alone, the oracle comparison, the Pareto front, and the plots.

Markdown links the PNGs, written next to the report; HTML embeds them, so the
page travels as one file.
"""

from __future__ import annotations

import argparse
import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

from .plots import write_plots
from .tune import split_stats

__all__ = ["main", "render"]

_FRONT_ROWS = 15


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows
    ]


def render(bundle: Bundle, traces: Sequence[Path], out: Path) -> tuple[list[str], list[Path]]:
    """Markdown lines of the report and the images it refers to."""
    lines = [f"# jetsplit report: {bundle.name}", "", bundle.description, "",
             f"- fingerprint `{bundle.fingerprint}`", f"- precision {bundle.precision}; "
             f"wire: activations {bundle.wire.activation}, frames {bundle.wire.frame}",
             f"- input {bundle.preprocess.height}x{bundle.preprocess.width} {bundle.preprocess.colour} "
             f"{bundle.preprocess.layout}; {bundle.num_classes} classes", "", "## Stages", ""]
    lines += _table(["stage", "where", "input", "model", "scores", "gate", "threshold"], [
        (s.name, s.where, s.input, s.model, s.scores, s.gate.kind if s.gate else "-",
         s.gate.threshold if s.gate else None) for s in bundle.stages])
    if bundle.extra:
        lines += ["", "## Tuning", ""]
        lines += _table(["key", "value"], [(k, json.dumps(v) if isinstance(v, (list, dict)) else v)
                                           for k, v in bundle.extra.items() if not isinstance(v, dict)])
    images: list[Path] = []
    first_cloud = bundle.first_cloud_stage()
    for path in traces:
        trace = Trace.load(path)
        if trace.stage_names != tuple(s.name for s in bundle.stages):
            raise ConfigError(f"trace {str(path)!r} has stages {list(trace.stage_names)}, the bundle {[s.name for s in bundle.stages]}")
        label = f"{trace.meta.get('data')}@{trace.meta.get('split')}"
        st = split_stats(trace, bundle.thresholds(), first_cloud)
        lines += ["", f"## On {label} (n = {trace.n})", ""]
        lines += _table(["", "accuracy", "offload", "latency ms", "energy mJ", "bytes"], [
            ("bundle thresholds", f"{100 * st['accuracy']:.2f}%", None if st["offload"] is None else f"{100 * st['offload']:.1f}%",
             st["mean_time_ms"], st["mean_energy_mj"], st["mean_bytes"]),
            ("every stage", f"{100 * st['accuracy_full']:.2f}%", None, st["time_full_ms"], st["energy_full_mj"], st["bytes_full"]),
        ])
        lines += [""] + _table(["stage", "exits here", "accuracy alone"], [
            (n, f"{100 * e:.1f}%", f"{100 * a:.2f}%")
            for n, e, a in zip(trace.stage_names, st["exit_fraction"], st["stage_accuracy_alone"])])
        if st["oracle"]:
            o = st["oracle"]
            lines += ["", f"Oracle: offloading only what the edge gets wrong and the cloud right needs "
                      f"{100 * o['oracle_offload']:.1f}% offload; the gate needs {100 * o['gate_offload_at_final_accuracy']:.1f}% "
                      f"for the final stage's accuracy ({o['gate_over_oracle']:.2f}x the oracle). A perfect gate could "
                      f"reach {100 * o['oracle_accuracy']:.2f}% (final stage {100 * o['final_accuracy']:.2f}%)."]
        # The grid includes the bundle's own thresholds, so its point can be marked.
        thr = bundle.thresholds()
        size = default_grid(trace.num_stages)
        cands = [np.union1d(candidate_thresholds(trace.score[:, s], size), [thr[s] if thr[s] is not None else np.inf])
                 for s in range(trace.num_stages - 1)]
        grid = evaluate_grid(trace, ("time", "energy", "bytes", "offload"), first_cloud, candidates=cands)
        front = pareto_front(grid, "time")
        step = max(1, len(front) // _FRONT_ROWS)
        lines += ["", "Pareto front (accuracy against latency):", ""]
        lines += _table(["thresholds", "accuracy", "latency ms"], [
            (", ".join("-" if t is None else f"{t:.3g}" for t in p.thresholds), f"{100 * p.accuracy:.2f}%", p.cost)
            for p in front[::step]])
        want = np.array([np.inf if t is None else t for t in thr[:-1]])
        chosen = int(np.flatnonzero((grid.thresholds[:, :-1] == want).all(axis=1))[0]) if len(want) else 0
        plot_dir = out.parent / f"{out.stem}_files" / trace.meta.get("split", "trace").__str__()
        pngs = write_plots(trace, grid, chosen, plot_dir, title=label)
        images += pngs
        lines += [""] + [f"![{p.stem}]({p.relative_to(out.parent)})" for p in pngs]
    return lines, images


def _html(lines: list[str], out: Path) -> str:
    body: list[str] = []
    in_table = False
    for line in lines:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= {"-"}:
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("!["):
            src = line[line.index("(") + 1 : -1]
            data = base64.b64encode((out.parent / src).read_bytes()).decode()
            body.append(f'<img src="data:image/png;base64,{data}" style="max-width:100%">')
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:auto}td{border:1px solid #ccc;padding:2px 6px}table{border-collapse:collapse}"
    return f"<!doctype html><html><head><meta charset='utf-8'><style>{style}</style></head><body>{''.join(body)}</body></html>\n"


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit report", description=(__doc__ or "").splitlines()[0])
    p.add_argument("bundle")
    p.add_argument("--trace", type=Path, action="append", default=[], help="trace to report on (repeatable)")
    p.add_argument("--out", type=Path, required=True, help="report.md or report.html")
    args = p.parse_args(list(argv))
    if args.out.suffix not in (".md", ".html"):
        raise ConfigError(f"--out: expected a .md or .html file, got {str(args.out)!r}")
    bundle = load_bundle(args.bundle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    lines, _ = render(bundle, args.trace, args.out)
    tuning = bundle.root / "tuning.json"
    if tuning.is_file() and not args.trace:
        lines += ["", "## Tuning summary", "", "```", tuning.read_text(), "```"]
    text = _html(lines, args.out) if args.out.suffix == ".html" else "\n".join(lines) + "\n"
    args.out.write_text(text)
    print(f"report -> {args.out}")
    return 0
