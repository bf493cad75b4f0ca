"""Cascade against cloud-only and edge-only, on the demo data, in one run.

- cascade: ``demo:little-big`` as shipped, little on the edge, big on a worker;
- cloud-only: the same two models with the little gate never accepting, so every
  frame goes to big over the same transport (the little model still runs: what a
  deployment without a gate would do is send the frame at once, so its time is
  subtracted in ``cloud_only_no_little``);
- edge-only: big alone on the edge.

A real worker process on loopback, the edge agent in this process reading the
1,000 MNIST test digits as fast as it can (no camera pacing), window 8. Throughput
is frames per second over the whole source; accuracy against the labels. Target:
the cascade at least 2x the cloud-only throughput at no more than 0.1 pt accuracy
loss (Yin-Yang reports 1.8x).

    .venv/bin/python bench/cascade.py [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/support, shared with the tests
from jetsplit.bundle import load_bundle, write_bundle  # noqa: E402
from jetsplit.cli.demo import demo_source  # noqa: E402
from jetsplit.edge.agent import EdgeAgent  # noqa: E402
from jetsplit.edge.config import EdgeConfig  # noqa: E402
from jetsplit.errors import BundleError  # noqa: E402
from jetsplit.manifest import read_toml  # noqa: E402
from tests.support.daemons import start_worker  # noqa: E402
from tests.support.machine import describe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "cascade.json"


def _variant(src: Path, out: Path, edit: Any) -> Path:
    manifest = read_toml(src / "bundle.toml", BundleError)
    manifest.pop("files")
    edit(manifest)
    sources = {s["model"]: src / s["model"] for s in manifest["stage"]}
    write_bundle(out, manifest, sources)
    return out


def _cloud_only(m: dict[str, Any]) -> None:
    m["name"] = "cloud-only"
    m["stage"][0]["gate"]["threshold"] = float("inf")


def _edge_only(m: dict[str, Any]) -> None:
    m["name"] = "edge-only"
    big = dict(m["stage"][1], where="edge")
    m["stage"] = [big]


def _run(bundle: str, endpoint: str | None, source: Path) -> dict[str, Any]:
    cloud = (endpoint,) if endpoint else ()
    agent = EdgeAgent(EdgeConfig(bundle=bundle, source=str(source), cloud=cloud, sinks=(), offload="frames",
                                 deadline_ms=2000.0, window=8))
    try:
        t0 = time.perf_counter()
        n = sum(1 for _ in agent.results())
        seconds = time.perf_counter() - t0
    finally:
        agent.close()
    s = agent.stats.summary()
    return {"frames": n, "fps": n / seconds, "accuracy": s["accuracy"], "offload_fraction": s["offload_fraction"],
            "fallback": s["fallback"], "p50_ms": s["p50_ms"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    source = demo_source()
    base = load_bundle("demo:little-big").root
    with tempfile.TemporaryDirectory() as tmp:
        cloud_only = _variant(base, Path(tmp) / "cloud-only", _cloud_only)
        edge_only = _variant(base, Path(tmp) / "edge-only", _edge_only)
        worker, endpoint = start_worker(str(base), str(cloud_only), bind="tcp://127.0.0.1:0",
                                        extra=("--log-level", "WARNING"), stderr=subprocess.DEVNULL)
        try:
            runs: dict[str, list[dict[str, Any]]] = {"cascade": [], "cloud_only": [], "edge_only": []}
            for _ in range(args.reps):  # interleaved, so drift hits all three alike
                runs["cascade"].append(_run(str(base), endpoint, source))
                runs["cloud_only"].append(_run(str(cloud_only), endpoint, source))
                runs["edge_only"].append(_run(str(edge_only), None, source))
        finally:
            worker.stop()
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("fps", "accuracy", "offload_fraction")}
           for k, v in runs.items()}
    ratio = med["cascade"]["fps"] / med["cloud_only"]["fps"]
    loss_pt = 100 * (med["cloud_only"]["accuracy"] - med["cascade"]["accuracy"])
    record = {
        "benchmark": "cascade",
        "bundle": "demo:little-big",
        "runs": runs,
        "medians": med,
        "cascade_over_cloud_only_fps": ratio,
        "cascade_over_edge_only_fps": med["cascade"]["fps"] / med["edge_only"]["fps"],
        "accuracy_loss_pt_vs_cloud_only": loss_pt,
        "target": {"fps_ratio_at_least": 2.0, "accuracy_loss_pt_at_most": 0.1,
                   "met": ratio >= 2.0 and loss_pt <= 0.1 + 1e-9},
        "note": "edge and worker share this machine's cores; cloud-only still runs little on the edge "
                "(its gate never accepts), which favours neither side much since little is 134 kFLOPs",
        "machine": describe(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"medians": med, "ratio": ratio, "loss_pt": loss_pt, "target": record["target"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
