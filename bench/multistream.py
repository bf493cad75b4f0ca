"""Eight streams through one agent against eight single-stream agents, same cores.

Issue 14, "Benchmark": total frames/s and summed memory of one ``jetsplit edge
run`` with eight ``--source``s (its muxer batches the newest frame of each source
through the edge stage) against eight ``jetsplit edge run`` processes with one
``--source`` each, started together on the same machine, at equal accuracy.

Two heads, both run on the edge only (``--offload none``: the cloud is not what
is measured, and local answers are deterministic, so the two set-ups' answers can
be compared frame by frame):

- ``demo-split``: the demo split bundle's head (the trained MNIST model) on
  640x480 BGR frames (MNIST test digits, enlarged, one class sub-folder each so
  results carry their truth);
- ``squeezenet``: SqueezeNet 1.0 at 224x224 (the onnx wheel's light model-zoo
  copy with seeded weights in place of its ConstantOfShape fills, from
  ``jetsplit.tools.realzoo``; batch axis made free), on 640x480 crops of
  scikit-learn's sample photos. Its
  weights are not trained: "equal accuracy" is then the two set-ups giving the
  same answers.

Each of the eight agents runs one engine thread with one ONNX Runtime thread (the
defaults); the one agent gets ``--engine-threads N`` engine threads (default: this
machine's cores; ``engine_threads`` in edge.toml: N batches at once on its one
session), so both set-ups can use every core. ``--multi-threads N`` gives its
session N intra-op threads instead or as well (they spin between runs, which
costs CPU time on a machine others share).

Frames are uncompressed BMP files (a camera hands over raw frames: the codec is
not what is measured); every source is read on demand, so every frame is answered
in both set-ups. Throughput is measured in steady state: results completed while
all processes run (from each result's ``t_capture + latency_ms``, on the shared
monotonic clock), over that window's length. Memory is the sum of VmRSS (and of
PSS, which counts shared pages once) over the processes, sampled every 0.2 s;
the median of the samples taken in steady state. Frames per CPU-second (the
processes' user + system time, start-up included: eight interpreters loading
eight sessions cost a few CPU-seconds the one agent spends once) is recorded
beside frames/s. Repetitions alternate the two
set-ups; medians of the per-repetition ratios are reported. The machine is
shared: its load average is recorded before and after.

    $ .venv/bin/python bench/multistream.py                  # ~4 minutes
    $ .venv/bin/python bench/multistream.py --workloads squeezenet --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from machine import describe

RESULTS = Path(__file__).resolve().parent / "results" / "multistream.json"
JETSPLIT = str(Path(sys.executable).with_name("jetsplit"))
TARGET_FPS, TARGET_MEM = 1.5, 0.35


# -- data and models ---------------------------------------------------------------


def digit_frames(root: Path, streams: int, n: int) -> list[Path]:
    """``streams`` folders of ``n`` 640x480 BGR MNIST digits each (different digits per folder)."""
    from jetsplit.datasets import load_dataset

    data = load_dataset("mnist", "test")
    folders = []
    for s in range(streams):
        folder = root / f"cam{s}"
        for i in range(n):
            j = (s * n + i) % len(data.images)
            sub = folder / data.class_names[data.labels[j]]
            sub.mkdir(parents=True, exist_ok=True)
            image = cv2.resize(data.images[j], (640, 480), interpolation=cv2.INTER_LINEAR)
            cv2.imwrite(str(sub / f"{i:05d}.bmp"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
        folders.append(folder)
    return folders


def photo_frames(root: Path, streams: int, n: int) -> list[Path]:
    """``streams`` folders of ``n`` 640x480 crops of scikit-learn's sample photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640 RGB photos
    big = [cv2.resize(cv2.cvtColor(p, cv2.COLOR_RGB2BGR), (960, 720)) for p in photos]
    rng = np.random.default_rng(0)
    folders = []
    for s in range(streams):
        folder = root / f"cam{s}"
        folder.mkdir(parents=True)
        for i in range(n):
            y, x = int(rng.integers(0, 240)), int(rng.integers(0, 320))
            cv2.imwrite(str(folder / f"{i:05d}.bmp"), big[(s + i) % 2][y:y + 480, x:x + 640])
        folders.append(folder)
    return folders


def squeezenet_bundle(out: Path) -> Path:
    """SqueezeNet 1.0 (``jetsplit.tools.realzoo``: the onnx wheel's light copy with
    seeded weights in place of its fills) as a one-stage edge bundle: the final
    softmax replaced by a flatten (the chain takes logits), batch axis free."""
    import onnx
    from onnx import helper

    from jetsplit.bundle import write_bundle
    from jetsplit.tools.realzoo import build_model

    model = onnx.load(str(build_model("squeezenet", out / "zoo", seed=14)))  # IR 3, opset 9
    g = model.graph
    softmax = next(n for n in g.node if n.op_type == "Softmax")
    flatten = helper.make_node("Flatten", [softmax.input[0]], ["logits"], axis=1)
    nodes = [flatten if n is softmax else n for n in g.node]
    inputs = [i for i in g.input if i.name not in {t.name for t in g.initializer}]
    inputs[0].type.tensor_type.shape.dim[0].dim_param = "N"
    logits = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 1000])
    graph = helper.make_graph(nodes, "squeezenet", inputs, [logits], list(g.initializer))
    fixed = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="jetsplit-bench")
    fixed.ir_version = 10  # onnx 1.23 would write IR 14, which ONNX Runtime refuses
    onnx.checker.check_model(fixed)
    path = out / "squeezenet.onnx"
    onnx.save(fixed, str(path))
    manifest = {
        "schema": 1, "name": "squeezenet-seeded", "mode": "custom",
        "input": {"height": 224, "width": 224, "colour": "rgb", "layout": "nchw", "dtype": "float32",
                  "scale": 1.0 / 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                  "interpolation": "area"},
        "labels": {"names": [f"c{i}" for i in range(1000)]},
        "wire": {"activation": "f16", "frame": "raw"},
        "stage": [{"name": "squeezenet", "model": "squeezenet.onnx", "where": "edge", "input": "frame",
                   "scores": "logits", "flops": 1_700_000_000}],
    }
    return write_bundle(out / "bundle", manifest, {"squeezenet.onnx": path}).root


# -- running -------------------------------------------------------------------------


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of a live process, KiB; (0, 0) once it is gone."""
    rss = pss = 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except (OSError, ValueError):
        pass
    return rss, pss


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_agents(bundle: str, groups: list[list[Path]], out: Path, multi_threads: int = 1,
               engine_threads: int = 1) -> dict[str, Any]:
    """One agent per group of sources, all started together; their results and memory."""
    procs = []
    for k, group in enumerate(groups):
        args = [JETSPLIT, "edge", "run", "--bundle", bundle, "--offload", "none", "--log-level", "WARNING",
                "--sink", f"jsonl:{out / f'agent{k}.jsonl'}"]
        if len(group) > 1 and (multi_threads != 1 or engine_threads != 1):
            toml = out / "edge.toml"
            toml.write_text(f"[edge]\nintra_op_threads = {multi_threads}\nengine_threads = {engine_threads}\n")
            args += ["--config", str(toml)]
        for folder in group:
            args += ["--source", str(folder)]
        procs.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    samples: list[tuple[float, int, int]] = []
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            mem = [_memory_kib(p.pid) for p in procs if p.poll() is None]
            if len(mem) == len(procs):
                samples.append((time.monotonic(), sum(m[0] for m in mem), sum(m[1] for m in mem)))

    sampler = threading.Thread(target=sample, daemon=True)
    cpu0 = _children_cpu_s()
    sampler.start()
    errors = [p.communicate(timeout=1800)[1] for p in procs]
    cpu_s = _children_cpu_s() - cpu0
    done.set()
    sampler.join()
    for p, err in zip(procs, errors):
        if p.returncode != 0:
            raise RuntimeError(f"agent exited {p.returncode}: {err[-2000:]}")
    per_agent = []
    for k in range(len(groups)):
        lines = (out / f"agent{k}.jsonl").read_text().splitlines()
        per_agent.append([json.loads(line) for line in lines])
    # Steady state: while every agent is producing results.
    ends = [[r["t_capture"] + r["latency_ms"] / 1000.0 for r in rs] for rs in per_agent]
    t0 = max(min(e) for e in ends)
    t1 = min(max(e) for e in ends)
    in_window = sum(1 for e in ends for t in e if t0 <= t <= t1)
    steady = [(r, p) for t, r, p in samples if t0 <= t <= t1] or [(r, p) for _, r, p in samples]
    results = [r for rs in per_agent for r in rs]
    labelled = [r for r in results if r.get("truth") is not None]
    return {
        "agents": len(groups), "frames": len(results),
        "fps": in_window / (t1 - t0) if t1 > t0 else float("nan"), "window_s": t1 - t0,
        # Frames per CPU-second (user + system, start-up included): what the cores
        # buy, whatever share of them the shared machine gave each set-up.
        "frames_per_cpu_s": len(results) / cpu_s, "cpu_s": cpu_s,
        "rss_mib": statistics.median(r for r, _ in steady) / 1024.0,
        "pss_mib": statistics.median(p for _, p in steady) / 1024.0,
        "accuracy": sum(r["label"] == r["truth"] for r in labelled) / len(labelled) if labelled else None,
        "answers": {(r["source_id"], r["frame"]): r["label"] for r in results},
    }


def workload(name: str, root: Path, streams: int, frames: int, reps: int, multi_threads: int,
             engine_threads: int) -> dict[str, Any]:
    if name == "demo-split":
        bundle, folders = "demo:split", digit_frames(root / "frames", streams, frames)
    else:
        bundle, folders = str(squeezenet_bundle(root / "model")), photo_frames(root / "frames", streams, frames)
    runs: list[dict[str, Any]] = []
    for rep in range(reps):
        order = ("multi", "single") if rep % 2 == 0 else ("single", "multi")
        pair: dict[str, Any] = {}
        for setup in order:
            out = root / f"{setup}{rep}"
            out.mkdir()
            groups = [folders] if setup == "multi" else [[f] for f in folders]
            pair[setup] = run_agents(bundle, groups, out, multi_threads, engine_threads)
        a, b = pair["multi"].pop("answers"), pair["single"].pop("answers")
        assert set(a) == set(b) and len(a) == streams * frames, "a frame was lost or duplicated"
        pair["same_answers"] = sum(a[k] == b[k] for k in a) / len(a)
        pair["fps_ratio"] = pair["multi"]["fps"] / pair["single"]["fps"]
        pair["cpu_efficiency_ratio"] = pair["multi"]["frames_per_cpu_s"] / pair["single"]["frames_per_cpu_s"]
        pair["rss_ratio"] = pair["multi"]["rss_mib"] / pair["single"]["rss_mib"]
        pair["pss_ratio"] = pair["multi"]["pss_mib"] / pair["single"]["pss_mib"]
        print(name, rep, json.dumps({k: v for k, v in pair.items()}, default=float), flush=True)
        runs.append(pair)
    med = {k: statistics.median(r[k] for r in runs)
           for k in ("fps_ratio", "cpu_efficiency_ratio", "rss_ratio", "pss_ratio", "same_answers")}
    return {
        "bundle": bundle, "streams": streams, "frames_per_stream": frames, "multi_intra_op_threads": multi_threads,
        "multi_engine_threads": engine_threads,
        "multi_fps": statistics.median(r["multi"]["fps"] for r in runs),
        "single_fps": statistics.median(r["single"]["fps"] for r in runs),
        "multi_rss_mib": statistics.median(r["multi"]["rss_mib"] for r in runs),
        "single_rss_mib": statistics.median(r["single"]["rss_mib"] for r in runs),
        "multi_accuracy": runs[0]["multi"]["accuracy"], "single_accuracy": runs[0]["single"]["accuracy"],
        **med,
        "met": med["fps_ratio"] >= TARGET_FPS and med["rss_ratio"] <= TARGET_MEM,
        "runs": runs,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--workloads", default="demo-split,squeezenet")
    p.add_argument("--streams", type=int, default=8)
    p.add_argument("--frames", type=int, default=0, help="frames per stream (default: 300 demo, 100 squeezenet)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--multi-threads", type=int, default=1, help="intra-op threads of the one agent's engine")
    p.add_argument("--engine-threads", type=int, default=len(os.sched_getaffinity(0)),
                   help="batches the one agent runs at once (engine_threads; default: this machine's cores)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    machine = describe()
    report: dict[str, Any] = {"benchmark": "multistream", "target": {"fps_ratio": TARGET_FPS, "rss_ratio": TARGET_MEM},
                              "machine": machine, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="jetsplit-multistream-") as tmp:
        for name in args.workloads.split(","):
            frames = args.frames or (300 if name == "demo-split" else 100)
            report["workloads"][name] = workload(name, Path(tmp) / name, args.streams, frames, args.reps,
                                                 args.multi_threads, args.engine_threads)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, w in report["workloads"].items():
        print(f"{name}: {w['multi_fps']:.0f} vs {w['single_fps']:.0f} frames/s (x{w['fps_ratio']:.2f}; "
              f"per CPU-second x{w['cpu_efficiency_ratio']:.2f}), "
              f"RSS {w['multi_rss_mib']:.0f} vs {w['single_rss_mib']:.0f} MiB (x{w['rss_ratio']:.2f}), "
              f"same answers {100 * w['same_answers']:.1f}%")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
