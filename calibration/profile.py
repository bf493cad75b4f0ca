"""Where to cut: activation sizes and measured latency share of every candidate cut.

Neurosurgeon-style (Kang et al., ASPLOS 2017), but measured rather than predicted:
the whole model runs on ONNX Runtime with one intra-op thread (the edge board's
budget per stream) and its per-node profile, median of several runs, gives each
cut the share of the time its head's nodes take (:mod:`.nodetime`). A few heads
are also timed in sessions of their own, as a check printed beside the table. The
recommendation minimises the per-frame latency

    edge_ms(cut) + bytes(cut) / bandwidth + (full_ms - edge_ms(cut)) / cloud_speedup

over every cut plus the two ends: "all on cloud" (send the input as 8-bit pixels,
as a camera delivers it) and "all on edge" (send nothing). The result's return
trip (a few scores) and the link's round-trip time are the same for every cut that
sends anything and are left out.

    >>> from jetsplit.calibration.profile import profile_model, format_table
    >>> print(format_table(profile_model("big.onnx", bandwidth_mbps=20)))  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.engines import Engine, open_engine
from jetsplit.errors import ConfigError

from .activations import cut_activations
from .graph import WIRE_BYTES, CutPoint, ModelGraph, candidate_cuts, check_cut, load_graph
from .modelfile import save_model
from .nodetime import ancestors, profile_nodes
from .precision_profile import precision_times
from .profile_table import format_table
from .split import extract, real_inputs

__all__ = [
    "DEFAULT_BANDWIDTH_MBPS",
    "DEFAULT_CLOUD_SPEEDUP",
    "Link",
    "Measurement",
    "Option",
    "Profile",
    "WireBytes",
    "choose",
    "format_table",
    "measure",
    "profile_model",
]

# Entropy codings a wire encoding may add (the protocol's).
COMPRESSIONS = ("lz4", "zstd")
# Real images the wire bytes are measured on.
_WIRE_SAMPLES = 4
DEFAULT_BANDWIDTH_MBPS = 10.0
DEFAULT_CLOUD_SPEEDUP = 5.0
# The board runs one stream per core: time heads as it would run them.
_THREADS = 1
# (activation batch, wire encoding) -> mean bytes per sample on the wire
WireBytes = Callable[[np.ndarray, str], float]


@dataclass(frozen=True)
class Link:
    """The network and cloud the recommendation is for.

    ``wire`` is how cut activations are encoded on the wire: fp32, f16 or i8,
    optionally entropy-coded (``i8+zstd``, ``f16+lz4``); a compressed encoding's
    bytes are measured on real activations (see :func:`profile_model`).
    """

    bandwidth_mbps: float = DEFAULT_BANDWIDTH_MBPS
    cloud_speedup: float = DEFAULT_CLOUD_SPEEDUP
    wire: str = "fp32"

    def __post_init__(self) -> None:
        if not self.bandwidth_mbps > 0:
            raise ConfigError(f"bandwidth: expected > 0 Mbit/s, got {self.bandwidth_mbps}")
        if not self.cloud_speedup > 0:
            raise ConfigError(f"cloud speedup: expected > 0, got {self.cloud_speedup}")
        base, _, compression = self.wire.partition("+")
        if base not in WIRE_BYTES or compression not in ("", *COMPRESSIONS):
            raise ConfigError(
                f"wire encoding: expected one of {', '.join(WIRE_BYTES)}, optionally "
                f"+{' or +'.join(COMPRESSIONS)}, got {self.wire!r}"
            )

    @property
    def base(self) -> str:
        """The encoding without its entropy coding (fp32, f16 or i8)."""
        return self.wire.partition("+")[0]

    def send_ms(self, nbytes: int) -> float:
        return nbytes * 8 / (self.bandwidth_mbps * 1e6) * 1e3


@dataclass(frozen=True)
class Option:
    """One place to split: ``kind`` is "cloud" (all on cloud), "cut" or "edge"."""

    kind: str
    tensors: tuple[str, ...]
    shape: str
    elements: int | None
    bytes: dict[str, int | None]
    edge_ms: float
    share: float
    send_bytes: int | None
    send_ms: float
    cloud_ms: float
    total_ms: float

    @property
    def label(self) -> str:
        if self.kind == "cloud":
            return "(all on cloud)"
        if self.kind == "edge":
            return "(all on edge)"
        return ",".join(self.tensors)


@dataclass(frozen=True)
class Measurement:
    """Timings of the full model and of each cut's head, per sample, in ms.

    ``edge_ms`` comes from one profiled run of the whole model; ``alone`` holds the
    heads that were also timed in sessions of their own (the check on it).
    """

    full_ms: float
    edge_ms: dict[tuple[str, ...], float]
    runs: int
    alone: dict[tuple[str, ...], float] = field(default_factory=dict)
    # bytes per sample of each cut in the link's wire encoding, measured on real
    # activations (empty: computed from the element count)
    wire_bytes: dict[tuple[str, ...], float] = field(default_factory=dict)


@dataclass(frozen=True)
class Profile:
    """A profiled model: every option, and the one recommended for ``link``."""

    model: str
    inputs: list[str]
    full_ms: float
    runs: int
    threads: int
    link: Link
    options: list[Option]
    recommended: Option
    cuts: list[CutPoint] = field(repr=False, default_factory=list)
    # heads timed alone, as a check on the profiled shares: cut label -> ms
    alone_ms: dict[str, float] = field(default_factory=dict)
    # whether the cuts' bytes in link.wire were measured on real activations
    measured_wire: bool = False
    # other precisions: name -> {"full_ms": ms, "edge_ms": {cut label: ms or None}}
    precisions: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "inputs": self.inputs,
            "full_ms": self.full_ms,
            "runs": self.runs,
            "threads": self.threads,
            "link": asdict(self.link),
            "options": [_option_json(o) for o in self.options],
            "recommended": _option_json(self.recommended),
            "heads_timed_alone_ms": self.alone_ms,
            "wire_bytes_measured": self.measured_wire,
            "precisions": self.precisions,
        }


def measure(
    graph: ModelGraph,
    cuts: Sequence[CutPoint],
    sample: Mapping[str, np.ndarray],
    runs: int = 15,
    warmup: int = 3,
    checks: int = 3,
) -> Measurement:
    """Time the whole model once with per-node profiling and give each cut the
    share of kernel time its head runs (:mod:`.nodetime`); then time ``checks``
    heads spread over the cuts in sessions of their own, as a check on the shares."""
    if runs < 1:
        raise ConfigError(f"runs: expected at least 1, got {runs}")
    profiled = profile_nodes(graph, sample, runs, warmup, _THREADS)
    # The wall time without the profiler's bookkeeping; the profile gives the shares.
    full_ms = _time(graph.path, sample, runs, warmup)
    edge_ms = {cut.tensors: full_ms * profiled.share(ancestors(graph, cut.tensors)) for cut in cuts}
    alone: dict[tuple[str, ...], float] = {}
    # Checks spread over the middle of the order (quarter, half, three quarters).
    picks = sorted({(i + 1) * len(cuts) // (checks + 1) for i in range(checks)}) if cuts else []
    with tempfile.TemporaryDirectory(prefix="jetsplit-profile-") as tmp:
        for i in picks:
            head_path = Path(tmp) / f"head{i}.onnx"
            save_model(extract(graph, graph.inputs, cuts[i].tensors), head_path, external=bool(graph.external))
            alone[cuts[i].tensors] = _time(head_path, sample, runs, warmup)
    return Measurement(full_ms, edge_ms, runs, alone)


def choose(
    graph: ModelGraph, cuts: Sequence[CutPoint], timing: Measurement, link: Link
) -> list[Option]:
    """Cost every option under ``link``; pure, so the policy is testable without timing."""
    full = timing.full_ms
    in_elements = graph.input_elements()
    in_shape = " ".join(graph.info(n).describe_shape() for n in graph.inputs)
    # The raw frame is 8-bit pixels whatever the model's input dtype: one byte each.
    options = [
        _option(
            "cloud",
            graph.inputs,
            in_shape,
            in_elements,
            edge_ms=0.0,
            full_ms=full,
            link=link,
            send_bytes=in_elements,
        )
    ]
    for cut in cuts:
        options.append(
            _option(
                "cut",
                cut.tensors,
                " ".join(info.describe_shape() for info in cut.infos),
                cut.elements,
                edge_ms=timing.edge_ms[cut.tensors],
                full_ms=full,
                link=link,
                send_bytes=_send_bytes(cut, timing, link),
            )
        )
    options.append(
        _option(
            "edge", graph.outputs, "", None, edge_ms=full, full_ms=full, link=link, send_bytes=0
        )
    )
    return options


def profile_model(
    model_path: str | Path,
    inputs: Mapping[str, np.ndarray] | None = None,
    link: Link | None = None,
    runs: int = 15,
    extra_cuts: Sequence[Sequence[str]] = (),
    wire_bytes_of: WireBytes | None = None,
    precisions: Sequence[str] = (),
) -> Profile:
    """Profile every candidate cut of ``model_path`` and recommend one for ``link``.

    ``inputs`` is a batch of real inputs (its first sample is timed); without one,
    scikit-image's bundled photographs are used. ``extra_cuts`` adds multi-tensor
    cuts to the single-tensor candidates. ``wire_bytes_of(activation, encoding)``
    gives the mean bytes per sample an encoder sends (the protocol's codec, which
    this package does not import); with it, each cut's bytes in ``link.wire`` are
    measured on real activations, which an entropy-coded encoding needs.
    ``precisions`` (fp16, int8) adds each cut's edge time in those precisions
    (:mod:`.precision_profile`); the recommendation stays fp32's.
    """
    link = link or Link()
    graph = load_graph(model_path)
    cuts = candidate_cuts(graph)
    known = {c.tensors for c in cuts}
    for names in extra_cuts:
        cut = check_cut(graph, names)
        if cut.tensors not in known:
            cuts.append(cut)
            known.add(cut.tensors)
    cuts.sort(key=lambda c: c.position)
    batch = dict(inputs) if inputs is not None else real_inputs(graph, count=1)
    sample = {name: np.ascontiguousarray(array[:1]) for name, array in batch.items()}
    timing = measure(graph, cuts, sample, runs=runs)
    if wire_bytes_of is not None:
        images = real_inputs(graph, count=_WIRE_SAMPLES) if inputs is None else dict(inputs)
        acts = cut_activations(graph, [t for c in cuts for t in c.tensors], images)
        measured = {c.tensors: sum(wire_bytes_of(acts[t], link.wire) for t in c.tensors) for c in cuts}
        timing = replace(timing, wire_bytes=measured)
    options = choose(graph, cuts, timing, link)
    best = min(options, key=lambda o: o.total_ms)
    other: dict[str, dict[str, Any]] = {}
    if precisions:
        calib = real_inputs(graph, count=8) if inputs is None else dict(inputs)
        times = precision_times(graph, cuts, sample, calib, precisions, runs, 3,
                                lambda path: _time(path, sample, runs, 3))
        other = {p: {"full_ms": full, "edge_ms": {",".join(k): v for k, v in heads.items()}}
                 for p, (full, heads) in times.items()}
    return Profile(
        str(graph.path),
        list(graph.inputs),
        timing.full_ms,
        runs,
        _THREADS,
        link,
        options,
        best,
        cuts,
        {",".join(k): v for k, v in timing.alone.items()},
        bool(timing.wire_bytes),
        other,
    )


# -- helpers -------------------------------------------------------------------


def _time(model: Path, sample: Mapping[str, np.ndarray], runs: int, warmup: int) -> float:
    engine: Engine
    with open_engine(model, intra_op_threads=_THREADS, inter_op_threads=1) as engine:
        for _ in range(warmup):
            engine.infer(sample)
        times = []
        for _ in range(runs):
            engine.infer(sample)
            times.append(engine.last_time_ms)
    return float(statistics.median(times))


def _all_bytes(elements: int | None) -> dict[str, int | None]:
    return {enc: None if elements is None else elements * size for enc, size in WIRE_BYTES.items()}


def _option(
    kind: str,
    tensors: Sequence[str],
    shape: str,
    elements: int | None,
    *,
    edge_ms: float,
    full_ms: float,
    link: Link,
    send_bytes: int | None,
) -> Option:
    # Timing noise can make a head look slower than the whole model; the cloud
    # never has negative work.
    cloud = max(full_ms - edge_ms, 0.0) / link.cloud_speedup if kind != "edge" else 0.0
    send = float("inf") if send_bytes is None else link.send_ms(send_bytes)
    share = edge_ms / full_ms if full_ms > 0 else 0.0
    return Option(
        kind,
        tuple(tensors),
        shape,
        elements,
        _all_bytes(elements),
        edge_ms,
        share,
        send_bytes,
        send,
        cloud,
        edge_ms + send + cloud,
    )


def _send_bytes(cut: CutPoint, timing: Measurement, link: Link) -> int | None:
    if cut.tensors in timing.wire_bytes:
        return round(timing.wire_bytes[cut.tensors])
    if link.wire != link.base:
        raise ConfigError(
            f"wire encoding {link.wire!r}: its bytes depend on the activations; measure them "
            "(`jetsplit profile` does) or choose fp32, f16 or i8"
        )
    return cut.wire_bytes(link.base)


def _option_json(opt: Option) -> dict[str, Any]:
    data = asdict(opt)
    data["tensors"] = list(opt.tensors)
    data["label"] = opt.label
    if opt.send_ms == float("inf"):  # unknown size: JSON has no infinity
        data["send_ms"] = data["total_ms"] = None
    return data

