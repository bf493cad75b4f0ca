"""Where to cut: activation sizes and measured latency share of every candidate cut.

Neurosurgeon-style (Kang et al., ASPLOS 2017), but measured rather than predicted:
each candidate's head sub-model is timed on ONNX Runtime with one intra-op thread
(the edge board's budget per stream), median of several runs, against the full
model timed the same way. The recommendation minimises the per-frame latency

    edge_ms(cut) + bytes(cut) / bandwidth + (full_ms - edge_ms(cut)) / cloud_speedup

    + rtt_ms  (every option that sends anything)

over every cut plus the two ends: "all on cloud" (send the input as 8-bit pixels,
as a camera delivers it) and "all on edge" (send nothing). The link's round trip
(``--rtt-ms``) is paid by every option that sends anything, so on a slow, far link
it is what keeps the frames on the board; the result's return trip (a few scores)
is left out.

    >>> from jetsplit.calibration.profile import profile_model, format_table
    >>> print(format_table(profile_model("big.onnx", bandwidth_mbps=20)))  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from jetsplit.engines import Engine, open_engine
from jetsplit.errors import ConfigError

from .graph import WIRE_BYTES, CutPoint, ModelGraph, candidate_cuts, check_cut, load_graph
from .split import extract, real_inputs

__all__ = [
    "DEFAULT_BANDWIDTH_MBPS",
    "DEFAULT_CLOUD_SPEEDUP",
    "Link",
    "Measurement",
    "Option",
    "Profile",
    "choose",
    "format_table",
    "measure",
    "profile_model",
]

DEFAULT_BANDWIDTH_MBPS = 10.0
DEFAULT_CLOUD_SPEEDUP = 5.0
# The board runs one stream per core: time heads as it would run them.
_THREADS = 1


@dataclass(frozen=True)
class Link:
    """The network and cloud the recommendation is for.

    ``wire`` is how cut activations are encoded on the wire (fp32, f16 or i8).
    """

    bandwidth_mbps: float = DEFAULT_BANDWIDTH_MBPS
    cloud_speedup: float = DEFAULT_CLOUD_SPEEDUP
    wire: str = "fp32"
    rtt_ms: float = 0.0

    def __post_init__(self) -> None:
        if not 0 <= self.rtt_ms < float("inf"):
            raise ConfigError(f"--rtt-ms: expected a round-trip time >= 0 ms, got {self.rtt_ms}")
        if not self.bandwidth_mbps > 0:
            raise ConfigError(f"bandwidth: expected > 0 Mbit/s, got {self.bandwidth_mbps}")
        if not self.cloud_speedup > 0:
            raise ConfigError(f"cloud speedup: expected > 0, got {self.cloud_speedup}")
        if self.wire not in WIRE_BYTES:
            raise ConfigError(
                f"wire encoding: expected one of {', '.join(WIRE_BYTES)}, got {self.wire!r}"
            )

    def send_ms(self, nbytes: int) -> float:
        """Time to send ``nbytes`` and hear back: the transfer plus the round trip
        (nothing for an option that sends nothing)."""
        return nbytes * 8 / (self.bandwidth_mbps * 1e6) * 1e3 + (self.rtt_ms if nbytes else 0.0)


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
    """Timings of the full model and of each cut's head, per sample, in ms."""

    full_ms: float
    edge_ms: dict[tuple[str, ...], float]
    runs: int


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
        }


def measure(
    graph: ModelGraph,
    cuts: Sequence[CutPoint],
    sample: Mapping[str, np.ndarray],
    runs: int = 15,
    warmup: int = 3,
) -> Measurement:
    """Time the full model and the head of every cut on one sample (median of ``runs``)."""
    if runs < 1:
        raise ConfigError(f"runs: expected at least 1, got {runs}")
    full_ms = _time(graph.path, sample, runs, warmup)
    edge_ms: dict[tuple[str, ...], float] = {}
    with tempfile.TemporaryDirectory(prefix="jetsplit-profile-") as tmp:
        for i, cut in enumerate(cuts):
            head_path = Path(tmp) / f"head{i}.onnx"
            onnx.save(extract(graph, graph.inputs, cut.tensors), str(head_path))
            edge_ms[cut.tensors] = _time(head_path, sample, runs, warmup)
    return Measurement(full_ms, edge_ms, runs)


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
                send_bytes=cut.wire_bytes(link.wire),
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
) -> Profile:
    """Profile every candidate cut of ``model_path`` and recommend one for ``link``.

    ``inputs`` is a batch of real inputs (its first sample is timed); without one,
    scikit-image's bundled photographs are used. ``extra_cuts`` adds multi-tensor
    cuts to the single-tensor candidates.
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
    options = choose(graph, cuts, timing, link)
    best = min(options, key=lambda o: o.total_ms)
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
    )


def format_table(profile: Profile) -> str:
    """The profile as a text table, the recommended option marked with ``*``."""
    link = profile.link
    lines = [
        f"model {profile.model}: full {profile.full_ms:.3f} ms per sample "
        f"(ONNX Runtime, {profile.threads} thread, median of {profile.runs})",
        f"link {link.bandwidth_mbps:g} Mbit/s, cloud {link.cloud_speedup:g}x faster than the edge, "
        f"round trip {link.rtt_ms:g} ms (in 'send'), "
        f"activations sent as {link.wire} (all-on-cloud sends 8-bit pixels)",
        "",
    ]
    header = [
        "",
        "#",
        "cut",
        "shape",
        "elements",
        "fp32",
        "f16",
        "i8",
        "edge ms",
        "share",
        "send ms",
        "cloud ms",
        "total ms",
    ]
    rows = []
    number = 0
    for opt in profile.options:
        if opt.kind == "edge":  # nothing crosses the link
            mark = "*" if opt is profile.recommended else ""
            zero = f"{0.0:.3f}"
            rows.append(
                [
                    mark,
                    "-",
                    opt.label,
                    "",
                    "",
                    "",
                    "",
                    "",
                    f"{opt.edge_ms:.3f}",
                    "100%",
                    zero,
                    zero,
                    f"{opt.total_ms:.3f}",
                ]
            )
            continue
        number += opt.kind == "cut"
        rows.append(
            [
                "*" if opt is profile.recommended else "",
                "-" if opt.kind != "cut" else str(number),
                opt.label,
                opt.shape,
                _count(opt.elements),
                _size(opt.bytes["fp32"]),
                _size(opt.bytes["f16"]),
                _size(opt.bytes["i8"]),
                f"{opt.edge_ms:.3f}",
                f"{opt.share:.0%}",
                f"{opt.send_ms:.3f}",
                f"{opt.cloud_ms:.3f}",
                f"{opt.total_ms:.3f}",
            ]
        )
    widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]
    # Text columns left-aligned, numbers right-aligned.
    left = {0, 2, 3}
    for row in [header, *rows]:
        cells = [
            row[c].ljust(widths[c]) if c in left else row[c].rjust(widths[c])
            for c in range(len(row))
        ]
        lines.append("  ".join(cells).rstrip())
    best = profile.recommended
    lines.append("")
    lines.append(f"recommended: {best.label}  ({best.total_ms:.3f} ms per frame; {_why(best)})")
    return "\n".join(lines)


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


def _option_json(opt: Option) -> dict[str, Any]:
    data = asdict(opt)
    data["tensors"] = list(opt.tensors)
    data["label"] = opt.label
    if opt.send_ms == float("inf"):  # unknown size: JSON has no infinity
        data["send_ms"] = data["total_ms"] = None
    return data


def _why(opt: Option) -> str:
    if opt.kind == "edge":
        return "the link is too slow (or its round trip too long) for any cut to pay off"
    if opt.kind == "cloud":
        return "sending the input and computing in the cloud is fastest"
    return f"edge {opt.edge_ms:.3f} + send {opt.send_ms:.3f} + cloud {opt.cloud_ms:.3f} ms"


def _count(n: int | None) -> str:
    return "?" if n is None else str(n)


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"
