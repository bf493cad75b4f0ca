"""``jetsplit demo``: the whole system on the built-in demo bundles.

Starts a real cloud worker process on loopback serving the three demo bundles,
then runs the edge agent on a labelled source made of the MNIST test digits (a
folder of PNGs per class, written on first run), once per bundle, with a progress
bar, and prints a summary: frames, accuracy against the labels, exits per stage,
offload, p50 and p99 latency, bytes sent and energy per frame. Both sides are shut
down cleanly at the end (the worker by SIGTERM, draining what it accepted).

``--offline`` prints ``jetsplit eval``'s table of the same bundles instead.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from jetsplit.demo import DEMO_BUNDLES
from jetsplit.errors import JetsplitError

__all__ = ["demo_source", "main"]


def demo_source(root: Path | None = None) -> Path:
    """A folder of MNIST test-split digits, one sub-folder per class (made once)."""
    import cv2

    from jetsplit.datasets import load_dataset

    root = root or Path(os.environ.get("JETSPLIT_DEMO_DATA", Path.home() / ".cache" / "jetsplit" / "mnist-test"))
    marker = root / ".complete"
    if marker.exists():
        return root
    data = load_dataset("mnist", "test")
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        folder = root / data.class_names[label]
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{i:05d}.png"), image)
    marker.write_text(f"{len(data)} images of mnist@test\n")
    return root


def _start_worker(bundles: Sequence[str]) -> tuple[subprocess.Popen[str], str]:
    cmd = [sys.executable, "-m", "jetsplit.cli", "cloud", "serve", "--bind", "tcp://127.0.0.1:0",
           "--log-level", "WARNING"]
    for b in bundles:
        cmd += ["--bundle", b]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    end = time.monotonic() + 60
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if line.startswith("serving "):
            return proc, line.split()[1]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise JetsplitError("demo: the cloud worker did not start (see its messages above)")


def _run_edge(bundle: str, endpoint: str, source: Path, progress: bool) -> dict[str, Any]:
    from jetsplit.edge.agent import EdgeAgent
    from jetsplit.edge.config import EdgeConfig

    # The demo lets frames leave the board (little-big and the ensemble's cloud
    # members need the frame); a deployment chooses with `offload`.
    config = EdgeConfig(bundle=bundle, source=str(source), cloud=(endpoint,), sinks=(), offload="frames",
                        deadline_ms=250.0)
    agent = EdgeAgent(config)
    try:
        results = agent.results()
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=1000, desc=bundle, unit="frame", leave=False)
        for _ in results:
            pass
    finally:
        agent.close()
    summary = agent.stats.summary()
    summary["bundle"] = bundle
    summary["stage_names"] = [s.name for s in agent.bundle.stages]
    return summary


def _table(rows: Sequence[dict[str, Any]]) -> str:
    head = (f"{'bundle':<18} {'frames':>6} {'acc %':>6} {'offload':>7} {'cloud':>6} {'fallbk':>6} "
            f"{'p50 ms':>7} {'p99 ms':>7} {'B up/fr':>8} {'mJ/fr':>6}  exits per stage")
    lines = [head, "-" * len(head)]
    for r in rows:
        acc = "" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}"
        exits = "  ".join(f"{name}:{r['exits'].get(name, 0)}" for name in r["stage_names"])
        lines.append(
            f"{r['bundle']:<18} {r['frames']:>6} {acc:>6} {100 * r['offload_fraction']:>6.1f}% {r['cloud']:>6} "
            f"{r['fallback']:>6} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['bytes_up_per_frame']:>8.0f} "
            f"{r['energy_mj_per_frame']:>6.2f}  {exits}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit demo", description="run the built-in demo")
    p.add_argument("--offline", action="store_true", help="print jetsplit eval's table instead")
    p.add_argument("--data-dir", type=Path, help="where the demo digits are written")
    args = p.parse_args(list(argv))
    bundles = [f"demo:{name}" for name in DEMO_BUNDLES]
    if args.offline:
        from jetsplit.cli.eval import evaluate, format_table

        print(format_table([evaluate(b, "mnist", "test") for b in bundles]))
        return 0
    started = time.monotonic()
    source = demo_source(args.data_dir)
    print(f"demo source: {source} (1000 MNIST test digits, labelled by folder)", file=sys.stderr)
    worker, endpoint = _start_worker(bundles)
    print(f"cloud worker pid {worker.pid} serving {endpoint}", file=sys.stderr, flush=True)
    rows = []
    try:
        for b in bundles:
            rows.append(_run_edge(b, endpoint, source, progress=sys.stderr.isatty()))
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(30)
    print(_table(rows))
    print(f"\nworker exited {code} after draining; demo took {time.monotonic() - started:.1f} s")
    return 0
