"""``jetsplit collect BUNDLE --data SPEC [--split S] --out TRACE``: record a trace.

Every stage runs on every sample (no early exit) and the trace keeps, per sample
and stage: gate score, prediction and correctness, engine time, the bytes the edge
sends and the energy spent, so ``jetsplit tune`` can evaluate any thresholds
without running a model again.

    $ jetsplit collect out/bundle --data folder:photos --split calib --out calib.npz
    $ jetsplit collect out/bundle --data folder:photos --split test  --out test.npz

Bytes: what the edge sends to reach the first cloud stage, charged to that stage
(so a sample that exits on the edge costs none). A carried activation is sized
under ``[wire].activation`` (``f16``: 2 bytes per element; ``i8``: 1 per element
plus a 4-byte scale; ``raw``: the dtype's size); a frame under ``[wire].frame``
(``raw``: the frame as the camera delivered it; ``jpeg``: measured, per frame, with
OpenCV at quality 90, the protocol's default). Compression (lz4/zstd) is not
modelled: the figures are the uncompressed upper bound. Message headers (~100 B)
are left out.

Energy, in mJ (watts x milliseconds), from a configured power model that the
operator measures on their board (``jetsplit power``, or a meter):

    energy[n, s] = W_where(s) * time_ms[n, s]  +  (s == first cloud) * E_up * bytes[n] * 1e-6

with ``W_edge`` (``--edge-watts``, default 10 W: a Jetson Orin Nano in its
15 W mode running a model), ``W_cloud`` (``--cloud-watts``, default 0: the budget
is the device's) and ``E_up`` (``--uplink-nj-per-byte``, default 200 nJ/B, the
order of Wi-Fi's energy per byte). Optional link terms add transfer time to the
first cloud stage's time: ``--rtt-ms`` and ``--uplink-mbps`` (default 0: not
modelled, so time is compute only).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.bundle import Bundle, load_bundle
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
from jetsplit.errors import ConfigError
from jetsplit.trace import Trace, collect_trace

__all__ = ["JPEG_QUALITY", "PowerModel", "collect", "frame_bytes", "main", "tensor_bytes"]

JPEG_QUALITY = 90


@dataclass(frozen=True)
class PowerModel:
    """Watts while each side computes, and the uplink's cost per byte."""

    edge_watts: float = 10.0
    cloud_watts: float = 0.0
    uplink_nj_per_byte: float = 200.0
    uplink_mbps: float = 0.0
    rtt_ms: float = 0.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value >= 0.0:
                raise ConfigError(f"power model {name}: expected a number >= 0, got {value}")


def tensor_bytes(elements: int, itemsize: int, encoding: str) -> int:
    """Bytes of one carried tensor on the wire under ``encoding``."""
    if encoding == "f16":
        return 2 * elements
    if encoding == "i8":
        return elements + 4  # int8 values and one float32 scale
    if encoding == "raw":
        return itemsize * elements
    raise ConfigError(f"activation encoding: expected raw, f16 or i8, got {encoding!r}")


def frame_bytes(frames: np.ndarray | Sequence[np.ndarray], encoding: str) -> np.ndarray:
    """(N,) bytes to send each frame under ``encoding`` (raw or jpeg)."""
    if encoding == "raw":
        return np.array([np.asarray(f).nbytes for f in frames], np.float64)
    if encoding == "jpeg":
        import cv2

        out = np.zeros(len(frames))
        for i, f in enumerate(frames):
            ok, buf = cv2.imencode(".jpg", np.asarray(f), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                raise ConfigError(f"frame {i}: OpenCV cannot JPEG-encode shape {np.asarray(f).shape}")
            out[i] = len(buf)
        return out
    raise ConfigError(f"frame encoding: expected raw or jpeg, got {encoding!r}")


def _uplink_bytes(chain: Chain, frames: np.ndarray | Sequence[np.ndarray], first_cloud: int) -> np.ndarray:
    bundle = chain.bundle
    spec = bundle.stages[first_cloud]
    if spec.input == "frame":
        shipped = frames if bundle.wire.frame_size == "full" else [bundle.preprocess.shipped(f) for f in frames]
        return frame_bytes(shipped, bundle.wire.frame)
    # The carry's size per sample: run the stages before the cloud on one frame.
    state = None
    carry: np.ndarray | None = None
    x = chain.preprocess(frames[:1])
    for i in range(first_cloud):
        inp = x if bundle.stages[i].input == "frame" else carry
        if inp is None:
            break
        so = chain.stage(i).run(inp, state)
        state, carry = so.state, so.carry
    if carry is None:
        raise ConfigError(f"stage {spec.name!r} takes a carried tensor but stage {first_cloud - 1} gives none")
    per = tensor_bytes(int(np.prod(carry.shape[1:])), carry.dtype.itemsize, bundle.wire.activation)
    return np.full(len(frames), float(per))


def collect(bundle: Bundle, data: str, split: str = "calib", power: PowerModel | None = None,
            batch_size: int = 1, threads: int = 1, progress: bool = False,
            labels: Sequence[str] | None = None) -> Trace:
    """The trace of ``bundle`` over one split, with bytes and energy filled in.
    ``labels``: a folder dataset's class order (see :func:`jetsplit.datasets.labels_for`)."""
    power = power or PowerModel()
    dataset = load_dataset(data, split, labels_for(data, bundle.labels, labels))
    if len(dataset) == 0:
        raise ConfigError(f"dataset {data!r} split {split!r} is empty")
    check_classes(dataset, data, bundle.name, bundle.num_classes)
    with Chain.open(bundle, intra_op_threads=threads) as chain:
        trace = collect_trace(chain, dataset.images, dataset.labels, batch_size=batch_size, progress=progress)
        n, s_count = trace.n, trace.num_stages
        bytes_up = np.zeros((n, s_count))
        first_cloud = bundle.first_cloud_stage()
        if first_cloud is not None:
            bytes_up[:, first_cloud] = _uplink_bytes(chain, dataset.images, first_cloud)
    time_ms = trace.time_ms.copy()
    watts = np.array([power.edge_watts if s.where == "edge" else power.cloud_watts for s in bundle.stages])
    energy = time_ms * watts[None, :]
    if first_cloud is not None:
        link_ms = power.rtt_ms + (bytes_up[:, first_cloud] * 8e-3 / power.uplink_mbps if power.uplink_mbps > 0 else 0.0)
        time_ms[:, first_cloud] += link_ms
        energy[:, first_cloud] += power.uplink_nj_per_byte * bytes_up[:, first_cloud] * 1e-6
    meta: dict[str, Any] = dict(trace.meta)
    meta.update({
        "bundle_path": str(bundle.root),
        "files": dict(bundle.files),
        "data": data,
        "split": split,
        "first_cloud": first_cloud,
        "batch_size": batch_size,
        "power_model": asdict(power),
        "precision": bundle.precision,
    })
    return replace(trace, time_ms=time_ms, bytes_up=bytes_up, energy_mj=energy, meta=meta)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jetsplit collect", description=(__doc__ or "").splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Collect one trace per split: calib to tune on, test to report on.")
    p.add_argument("bundle", help="bundle directory or demo:NAME")
    p.add_argument("--data", required=True, help=DATA_HELP)
    p.add_argument("--split", default="calib", choices=SPLITS, help="default calib")
    p.add_argument("--labels", metavar="NAMES",
                   help="folder: datasets: the class sub-folders in the model's label order, comma-separated "
                        "(default: the bundle's labels if they name every sub-folder, else sorted by name)")
    p.add_argument("--out", required=True, type=Path, help="trace file to write (.npz)")
    p.add_argument("--batch-size", type=int, default=1, help="1 (default) times each frame as it runs online")
    p.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    p.add_argument("--edge-watts", type=float, default=PowerModel.edge_watts)
    p.add_argument("--cloud-watts", type=float, default=PowerModel.cloud_watts)
    p.add_argument("--uplink-nj-per-byte", type=float, default=PowerModel.uplink_nj_per_byte)
    p.add_argument("--uplink-mbps", type=float, default=0.0, help="add transfer time (0: not modelled)")
    p.add_argument("--rtt-ms", type=float, default=0.0, help="add a round trip to offloaded samples")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size: expected >= 1, got {args.batch_size}")
    power = PowerModel(args.edge_watts, args.cloud_watts, args.uplink_nj_per_byte, args.uplink_mbps, args.rtt_ms)
    bundle = load_bundle(args.bundle)
    trace = collect(bundle, args.data, args.split, power, args.batch_size, args.threads,
                    progress=not args.no_progress and sys.stderr.isatty(), labels=parse_labels(args.labels))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trace.save(args.out)
    full = trace.full()
    now = trace.cascade()
    print(f"trace: {trace.n} samples x {trace.num_stages} stages of {bundle.name!r} on {args.data}@{args.split} -> {args.out}")
    print(f"  bundle thresholds: accuracy {100 * now.accuracy:.2f}% (every stage: {100 * full.accuracy:.2f}%), "
          f"{now.mean_time_ms:.3f} ms, {now.mean_bytes:.0f} B, {now.mean_energy_mj:.3f} mJ per sample")
    warning = near_chance(full.accuracy, trace.labels, f"{args.data}@{args.split} with bundle {bundle.name!r}")
    if warning:
        print(warning, file=sys.stderr)
    return 0
