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
  copy, its ConstantOfShape weight fills replaced by seeded He-normal weights,
  batch axis made free), on 640x480 crops of scikit-learn's sample photos. Its
  weights are not trained: "equal accuracy" is then the two set-ups giving the
  same answers.

Each set-up is configured as an operator would: the one agent's engine gets the
machine's cores (``intra_op_threads`` = usable cores: its single ONNX Runtime
session runs every stream's batches), each of the eight agents keeps the default
of one thread (eight processes already share the cores).

Frames are uncompressed BMP files (a camera hands over raw frames: the codec is
not what is measured); every source is read on demand, so every frame is answered
in both set-ups. Throughput is measured in steady state: results completed while
all processes run (from each result's ``t_capture + latency_ms``, on the shared
monotonic clock), over that window's length. Memory is the sum of VmRSS (and of
PSS, which counts shared pages once) over the processes, sampled every 0.2 s;
the median of the samples taken in steady state. Repetitions alternate the two
set-ups; medians of the per-repetition ratios are reported. The machine is
shared: its load average is recorded before and after.

    $ .venv/bin/python bench/multistream.py                  # ~4 minutes
    $ .venv/bin/python bench/multistream.py --workloads squeezenet --reps 2
"""

from __future__ import annotations

import argparse
import json
import os
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
SQUEEZENET = Path(cv2.__file__).parents[1] / "onnx" / "backend" / "test" / "data" / "light" / "light_squeezenet.onnx"
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
    """SqueezeNet 1.0 as a one-stage edge bundle: seeded weights for the fills, the
    final softmax replaced by a flatten (the chain takes logits), batch axis free."""
    import onnx
    from onnx import helper, numpy_helper

    from jetsplit.bundle import write_bundle

    model = onnx.load(str(SQUEEZENET))
    g = model.graph
    shapes = {i.name: numpy_helper.to_array(i) for i in g.initializer if i.name.endswith("__SHAPE")}
    rng = np.random.default_rng(14)
    weights = []
    keep = []
    for node in g.node:
        if node.op_type != "ConstantOfShape":
            keep.append(node)
            continue
        shape = tuple(int(d) for d in shapes[node.input[0]])
        if len(shape) == 4:  # a conv's weight: He-normal over its fan-in
            w = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[1:])), shape).astype(np.float32)
        else:
            w = np.zeros(shape, np.float32)
        weights.append(numpy_helper.from_array(w, node.output[0]))
    softmax = next(n for n in keep if n.op_type == "Softmax")
    keep[keep.index(softmax)] = helper.make_node("Flatten", [softmax.input[0]], ["logits"], axis=1)
    others = [i for i in g.initializer if not i.name.endswith("__SHAPE")]
    init_names = {i.name for i in [*others, *weights]}
    data = next(i for i in g.input if i.name not in init_names)
    data.type.tensor_type.shape.dim[0].dim_param = "N"
    logits = helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 1000])
    graph = helper.make_graph(keep, "squeezenet", [data], [logits], [*others, *weights])
    fixed = helper.make_model(graph, opset_imports=list(model.opset_import), producer_name="jetsplit-bench")
    fixed.ir_version = 10  # onnx 1.23 would write IR 14, which ONNX Runtime refuses
    onnx.checker.check_model(fixed)
    path = out / "squeezenet.onnx"
    out.mkdir(parents=True, exist_ok=True)
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


def run_agents(bundle: str, groups: list[list[Path]], out: Path) -> dict[str, Any]:
    """One agent per group of sources, all started together; their results and memory."""
    procs = []
    for k, group in enumerate(groups):
        args = [JETSPLIT, "edge", "run", "--bundle", bundle, "--offload", "none", "--log-level", "WARNING",
                "--sink", f"jsonl:{out / f'agent{k}.jsonl'}"]
        if len(group) > 1:
            # The one agent's one engine gets the cores; eight agents already share them.
            toml = out / "edge.toml"
            toml.write_text(f"[edge]\nintra_op_threads = {len(os.sched_getaffinity(0))}\n")
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
    sampler.start()
    errors = [p.communicate(timeout=1800)[1] for p in procs]
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
        "rss_mib": statistics.median(r for r, _ in steady) / 1024.0,
        "pss_mib": statistics.median(p for _, p in steady) / 1024.0,
        "accuracy": sum(r["label"] == r["truth"] for r in labelled) / len(labelled) if labelled else None,
        "answers": {(r["source_id"], r["frame"]): r["label"] for r in results},
    }


def workload(name: str, root: Path, streams: int, frames: int, reps: int) -> dict[str, Any]:
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
            pair[setup] = run_agents(bundle, groups, out)
        a, b = pair["multi"].pop("answers"), pair["single"].pop("answers")
        assert set(a) == set(b) and len(a) == streams * frames, "a frame was lost or duplicated"
        pair["same_answers"] = sum(a[k] == b[k] for k in a) / len(a)
        pair["fps_ratio"] = pair["multi"]["fps"] / pair["single"]["fps"]
        pair["rss_ratio"] = pair["multi"]["rss_mib"] / pair["single"]["rss_mib"]
        pair["pss_ratio"] = pair["multi"]["pss_mib"] / pair["single"]["pss_mib"]
        print(name, rep, json.dumps({k: v for k, v in pair.items()}, default=float), flush=True)
        runs.append(pair)
    med = {k: statistics.median(r[k] for r in runs) for k in ("fps_ratio", "rss_ratio", "pss_ratio", "same_answers")}
    return {
        "bundle": bundle, "streams": streams, "frames_per_stream": frames,
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
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    machine = describe()
    report: dict[str, Any] = {"benchmark": "multistream", "target": {"fps_ratio": TARGET_FPS, "rss_ratio": TARGET_MEM},
                              "machine": machine, "workloads": {}}
    with tempfile.TemporaryDirectory(prefix="jetsplit-multistream-") as tmp:
        for name in args.workloads.split(","):
            frames = args.frames or (300 if name == "demo-split" else 100)
            report["workloads"][name] = workload(name, Path(tmp) / name, args.streams, frames, args.reps)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, w in report["workloads"].items():
        print(f"{name}: {w['multi_fps']:.0f} vs {w['single_fps']:.0f} frames/s (x{w['fps_ratio']:.2f}), "
              f"RSS {w['multi_rss_mib']:.0f} vs {w['single_rss_mib']:.0f} MiB (x{w['rss_ratio']:.2f}), "
              f"same answers {100 * w['same_answers']:.1f}%")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
