"""``jetsplit bench``: time each stage of a bundle on this device, and size its hand-offs.

    jetsplit bench BUNDLE [--batch 1 8 ...] [--runs 30] [--backend onnxruntime|tensorrt]
                   [--threads 1] [--data SPEC] [--power auto|jtop|sysfs[:ROOT]|none]
                   [--power-interval-ms 20] [--json]

Every stage runs as the chain runs it (``Stage.run``: engine, probabilities, gate)
on its real input: the preprocessed frames, or the tensor the stage before it
carried, with that stage's combined probabilities. Per batch size it reports the
median and 95th percentile of ``runs`` timed calls (after a short warm-up) and the
samples per second the median gives; preprocessing (what the edge does to every
frame before its first stage) is its own row. Times are wall clock around the
call; ``engine_ms`` is the engine's share of the median.

For every stage but the last it also reports what that stage hands over when the
chain continues on the next one, per sample: the tensors a request resuming there
carries (``jetsplit.handoff``), raw and as the wire would carry them: encoded with
the bundle's ``[wire]`` encodings into a real request message, header included,
which is how the edge agent counts ``bytes_up``. The boundary before the first
cloud stage is the one the edge actually pays; the others say what a cut there
would cost.

Where the board has power rails (``--power``, default ``auto``: jtop or the
INA3221 in sysfs; ``none`` to skip), an :class:`~jetsplit.edge.power.EnergyMeter`
samples them while the stages run (bench starts its sampler and stops it at the
end) and each row also gives the board's mean power over its timed runs and the
energy per call, integrated as the agent integrates a frame's; the power mode and
clocks are recorded where jtop gives them. Without rails nothing is estimated:
the columns stay empty.

Frames come from ``--data`` (a dataset spec; its calib split), else from the data
the bundle was tuned on (``[meta].tuned_on``), else from scikit-image's bundled
photographs, so the activations are those of real images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from jetsplit.bundle import Bundle, load_bundle
from jetsplit.chain import Chain, ChainState, StageOutput
from jetsplit.datasets import DATA_HELP, load_dataset
from jetsplit.edge.power import (
    EnergyMeter,
    ModelPower,
    PowerConfig,
    describe_board,
    detect_power,
    parse_source,
)
from jetsplit.errors import ConfigError, JetsplitError
from jetsplit.handoff import needed, pack, wire_encodings
from jetsplit.protocol import encode_infer
from jetsplit.tools.wirecost import EncodingCost, encoding_costs, format_costs

__all__ = ["BenchResult", "Handoff", "StageTiming", "bench", "format_result", "handoffs", "load_frames", "main"]

PREPROCESS = "(preprocess)"
_WARMUP = 3
# Hand-off sizes vary per sample only through compression or JPEG: a few samples
# give the mean.
_HANDOFF_SAMPLES = 16
# Samples the activation encodings are compared on (their top-1 agreement).
_ENCODING_SAMPLES = 64
_SAMPLE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins")


@dataclass(frozen=True)
class StageTiming:
    """One stage (or preprocessing) at one batch size; times per call, in ms."""

    stage: str
    where: str
    batch: int
    median_ms: float
    p95_ms: float
    engine_ms: float | None
    samples_per_s: float
    watts: float | None = None  # the board's mean power over the timed runs
    energy_mj: float | None = None  # per call


@dataclass(frozen=True)
class Handoff:
    """What ``after`` hands over so the chain resumes at ``to``, per sample (mean)."""

    after: str
    to: str
    tensors: tuple[str, ...]
    raw_bytes: float
    wire_bytes: float
    encodings: dict[str, str]
    edge_to_cloud: bool


@dataclass(frozen=True)
class BenchResult:
    bundle: str
    fingerprint: str
    backend: str
    threads: int | None
    runs: int
    frames: str
    timings: list[StageTiming]
    handoffs: list[Handoff]
    # what each activation encoding would cost at the edge-to-cloud hand-off
    encodings: list[EncodingCost] = field(default_factory=list)
    encoding_samples: int = 0
    power: dict[str, Any] | None = None  # the meter's source, interval and the board's mode

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for h in data["handoffs"]:
            h["tensors"] = list(h["tensors"])
        return data


def load_frames(bundle: Bundle, data: str | None) -> tuple[list[np.ndarray], str]:
    """Frames as a camera delivers them (HxW or HxWxC uint8, BGR) and where they came from."""
    if data is not None:
        return _dataset_frames(data), f"{data}@calib"
    tuned_on = str(bundle.extra.get("tuned_on", ""))
    if tuned_on:
        # tune and calibrate write "SPEC@SPLIT"; SPEC may itself hold an "@".
        head, sep, _ = tuned_on.rpartition("@")
        spec = head if sep else tuned_on
        try:
            return _dataset_frames(spec), f"{spec}@calib"
        except JetsplitError as exc:
            # Tuned on another machine (a folder that is not on this board): timings
            # hardly depend on which real images run, so carry on; hand-off sizes
            # under JPEG or compression do, which is why the output names the frames.
            note = f"the bundle's tuning data is not readable here: {exc}"
    else:
        note = "give --data for your own frames"
    import cv2
    import skimage.data

    photos = [getattr(skimage.data, name)() for name in _SAMPLE_PHOTOS]
    # scikit-image gives RGB (or gray); a camera pipeline through OpenCV gives BGR.
    frames = [cv2.cvtColor(p, cv2.COLOR_RGB2BGR) if p.ndim == 3 else p for p in photos]
    return frames, f"scikit-image sample photos ({note})"


def _dataset_frames(spec: str) -> list[np.ndarray]:
    dataset = load_dataset(spec, "calib")
    if len(dataset) == 0:
        raise ConfigError(f"--data {spec!r}: its calib split is empty")
    return [np.asarray(img) for img in dataset.images]


def _take(frames: Sequence[np.ndarray], n: int) -> list[np.ndarray]:
    return [frames[i % len(frames)] for i in range(n)]


@dataclass(frozen=True)
class _Timed:
    times: list[float]  # ms per call
    start: float  # monotonic seconds around the timed calls
    end: float


def _time_calls(call: Any, runs: int) -> tuple[_Timed, Any]:
    for _ in range(_WARMUP):
        out = call()
    times = []
    start = time.monotonic()
    for _ in range(runs):
        t0 = time.perf_counter()
        out = call()
        times.append((time.perf_counter() - t0) * 1000.0)
    return _Timed(times, start, time.monotonic()), out


def _timing(stage: str, where: str, batch: int, timed: _Timed, engine_ms: float | None,
            meter: EnergyMeter | None) -> StageTiming:
    times = timed.times
    median = float(statistics.median(times))
    watts = energy = None
    if meter is not None and timed.end > timed.start:
        joules = meter.energy_j(timed.start, timed.end)
        watts, energy = joules / (timed.end - timed.start), joules * 1000.0 / len(times)
    return StageTiming(stage, where, batch, median, float(np.percentile(times, 95)), engine_ms,
                       batch / (median / 1000.0) if median > 0 else float("inf"), watts, energy)


def time_stages(chain: Chain, frames: Sequence[np.ndarray], batch: int, runs: int,
                meter: EnergyMeter | None = None) -> list[StageTiming]:
    """Preprocessing and every stage of ``chain`` at one batch size (with the
    board's power and energy per call where ``meter`` samples a sensor)."""
    bundle = chain.bundle
    batch_frames = _take(frames, batch)
    timed, x = _time_calls(lambda: chain.preprocess(batch_frames), runs)
    out = [_timing(PREPROCESS, "edge", batch, timed, None, meter)]
    state: ChainState | None = None
    carry: np.ndarray | None = None
    for i, spec in enumerate(bundle.stages):
        st = chain.stage(i)
        inp = x if spec.input == "frame" else carry
        if inp is None:  # the chain checked this when it opened; a bundle bug if it happens
            raise ConfigError(f"stage {spec.name!r} takes a carried tensor, but the stage before it carried none")
        outputs: list[StageOutput] = []
        timed, _ = _time_calls(lambda: outputs.append(st.run(inp, state)), runs)  # noqa: B023 (called at once)
        engine = float(statistics.median(so.time_ms for so in outputs[_WARMUP:]))
        out.append(_timing(spec.name, spec.where, batch, timed, engine, meter))
        state, carry = outputs[-1].state, outputs[-1].carry
    return out


def handoffs(chain: Chain, frames: Sequence[np.ndarray]) -> list[Handoff]:
    """Per-sample hand-off sizes at every boundary between stages (see the module docstring)."""
    bundle = chain.bundle
    encodings = wire_encodings(bundle)
    first_cloud = bundle.first_cloud_stage()
    boundaries = range(1, len(bundle.stages))
    raw: dict[int, list[int]] = {i: [] for i in boundaries}
    wire: dict[int, list[int]] = {i: [] for i in boundaries}
    # Frame by frame, as the edge runs them (and within any engine's batch limit).
    for frame in _take(frames, min(len(frames), _HANDOFF_SAMPLES)):
        outputs = chain.run_all(chain.preprocess([frame]))
        for nxt in boundaries:
            so = outputs[nxt - 1]
            tensors = pack(bundle, nxt, frame, so.carry, so.state)
            raw[nxt].append(sum(a.nbytes for a in tensors.values()))
            # A real request message, as the edge's client builds it; the request id
            # and deadline take sizes they have in a running agent.
            message = encode_infer(1000, bundle.fingerprint, nxt, 150.0, tensors, encodings)
            wire[nxt].append(sum(memoryview(part).nbytes for part in message))
    result = []
    for nxt in boundaries:
        names = needed(bundle, nxt)
        result.append(Handoff(
            after=bundle.stages[nxt - 1].name, to=bundle.stages[nxt].name, tensors=names,
            raw_bytes=float(np.mean(raw[nxt])), wire_bytes=float(np.mean(wire[nxt])),
            encodings={n: encodings.get(n, "raw") for n in names}, edge_to_cloud=nxt == first_cloud,
        ))
    return result


def open_meter(power: PowerConfig | None) -> EnergyMeter | None:
    """A meter on the board's sensor, or None: no config, or ``auto`` found no
    rails (bench never passes a model off as a measurement)."""
    if power is None:
        return None
    reader = detect_power(power)
    if isinstance(reader, ModelPower):
        return None
    return EnergyMeter(reader)


def bench(bundle: Bundle, batches: Sequence[int], runs: int = 30, backend: str = "onnxruntime",
          threads: int = 1, data: str | None = None, progress: bool = False,
          power: PowerConfig | None = None) -> BenchResult:
    """Time every stage of ``bundle`` at each batch size and size its hand-offs;
    with ``power``, measure the board while they run (module docstring)."""
    if not batches or min(batches) < 1:
        raise ConfigError(f"--batch: expected sizes >= 1, got {list(batches)}")
    if runs < 1:
        raise ConfigError(f"--runs: expected at least 1, got {runs}")
    frames, frames_from = load_frames(bundle, data)
    # The edge's defaults: ONNX Runtime with the agent's intra-op threads; a
    # TensorRT engine's optimisation profile must cover the largest batch.
    options: dict[str, Any] = (
        {"intra_op_threads": threads, "inter_op_threads": 1} if backend == "onnxruntime"
        else {"max_batch": max(8, *batches)}
    )
    timings: list[StageTiming] = []
    meter = open_meter(power)
    with Chain.open(bundle, backend=backend, **options) as chain:
        iterator: Any = batches
        if progress:
            from tqdm import tqdm

            iterator = tqdm(batches, desc="bench", unit="batch size", leave=False, file=sys.stderr)
        if meter is not None:
            assert power is not None
            meter.start(power.interval_ms / 1000.0)
        try:
            for batch in iterator:
                timings += time_stages(chain, frames, batch, runs, meter)
        finally:
            status = meter.status() if meter is not None else None
            if meter is not None:
                meter.stop()
        boundaries = handoffs(chain, frames)
        costs, samples = activation_costs(chain, frames)
    if meter is not None and meter.error is not None:
        raise ConfigError(f"power: {meter.reader.description}: the sensor failed during the bench: {meter.error}")
    return BenchResult(str(bundle.root), bundle.fingerprint, backend,
                       threads if backend == "onnxruntime" else None, runs, frames_from, timings, boundaries,
                       costs, samples, status)


def activation_costs(chain: Chain, frames: Sequence[np.ndarray],
                     limit: int = _ENCODING_SAMPLES) -> tuple[list[EncodingCost], int]:
    """Every activation encoding at the edge-to-cloud hand-off, on up to ``limit``
    real frames: bytes and the change in the cloud's answer
    (:mod:`jetsplit.tools.wirecost`)."""
    bundle = chain.bundle
    first = bundle.first_cloud_stage()
    if first is None or first == 0 or bundle.stages[first].input != "carry":
        return [], 0
    picked = _take(frames, min(len(frames), limit))
    outputs = chain.run_all(chain.preprocess(picked))
    edge = outputs[first - 1]
    if edge.carry is None or not np.issubdtype(edge.carry.dtype, np.floating):
        return [], 0

    def probs_of(carry: np.ndarray) -> np.ndarray:
        return chain.run_from(first, np.zeros((len(carry),), np.float32), carry=carry, state=edge.state).probs

    return encoding_costs(edge.carry, probs_of), len(picked)


def format_result(result: BenchResult, name: str) -> str:
    threads = f", {result.threads} intra-op thread{'s' if result.threads != 1 else ''}" if result.threads else ""
    lines = [
        f"bench {name} (fingerprint {result.fingerprint[:12]}...) on {result.backend}{threads}",
        f"median and p95 of {result.runs} runs per batch; frames: {result.frames}",
        "",
    ]
    header = ["stage", "where", "batch", "median ms", "p95 ms", "engine ms", "samples/s"]
    rows = [[t.stage, t.where, str(t.batch), f"{t.median_ms:.3f}", f"{t.p95_ms:.3f}",
             "" if t.engine_ms is None else f"{t.engine_ms:.3f}", f"{t.samples_per_s:,.0f}"]
            for t in result.timings]
    if result.power is not None:
        header += ["board W", "mJ/call"]
        for row, t in zip(rows, result.timings):
            row += ["" if t.watts is None else f"{t.watts:.2f}", "" if t.energy_mj is None else f"{t.energy_mj:.3f}"]
    lines += _table(header, rows, text={0, 1})
    if result.power is not None:
        lines.append(f"power: {result.power['description']}, sampled every {result.power.get('interval_ms', 0):g} ms; "
                     f"{describe_board(result.power.get('board', {}))}")
    if result.handoffs:
        lines += ["", "hand-off per sample (what a stage sends so the chain resumes at the next one):"]
        header = ["after", "to", "tensors", "raw B", "wire B", "encoding", ""]
        rows = [[h.after, h.to, "+".join(h.tensors), f"{h.raw_bytes:,.0f}", f"{h.wire_bytes:,.0f}",
                 " ".join(f"{k}:{v}" for k, v in h.encodings.items()),
                 "<- edge to cloud" if h.edge_to_cloud else ""] for h in result.handoffs]
        lines += _table(header, rows, text={0, 1, 2, 5, 6})
        lines.append("wire B: one request message as the edge sends it, header included")
    if result.encodings:
        lines += ["", *format_costs(result.encodings, result.encoding_samples)]
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]], text: set[int]) -> list[str]:
    """Columns in ``text`` left-aligned, numbers right-aligned."""
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    return ["  ".join(cell.ljust(widths[c]) if c in text else cell.rjust(widths[c])
                      for c, cell in enumerate(row)).rstrip() for row in [header, *rows]]


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit bench", description="time each stage of a bundle on this device")
    p.add_argument("bundle", help="bundle directory or demo:NAME")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8], help="batch sizes (default 1 8)")
    p.add_argument("--runs", type=int, default=30, help="timed runs per stage and batch size (default 30)")
    p.add_argument("--backend", default="onnxruntime", help="onnxruntime (default) | tensorrt")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads (default 1, as the edge)")
    p.add_argument("--data", help=f"frames from a dataset: {DATA_HELP}")
    p.add_argument("--power", default="auto", help="power rails to measure: auto (default) | jtop | sysfs[:ROOT] | none")
    p.add_argument("--power-interval-ms", type=float, default=20.0, help="sampling interval (default 20)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(list(argv))
    if args.threads < 1:
        raise ConfigError(f"--threads: expected at least 1, got {args.threads}")
    if not args.power_interval_ms > 0:
        raise ConfigError(f"--power-interval-ms: expected a number > 0, got {args.power_interval_ms:g}")
    power = None
    if args.power != "none":
        power = parse_source(args.power, PowerConfig(interval_ms=args.power_interval_ms), "--power")
    bundle = load_bundle(args.bundle)
    result = bench(bundle, args.batch, args.runs, args.backend, args.threads, args.data,
                   progress=not args.json and sys.stderr.isatty(), power=power)
    print(json.dumps(result.to_json(), indent=2) if args.json else format_result(result, args.bundle))
    return 0
