"""``jetsplit describe``: what a worker serves, as it describes itself.

    jetsplit describe ENDPOINT [--json] [--timeout-ms 3000]
                      [--curve-secret FILE --curve-server-key FILE]

Sends one ``describe`` request (SPEC.md 3.8) and prints the answer: the worker's
state and limits, the encodings and compressions it decodes, and per bundle its
fingerprint, labels and stages, with the tensors a request resuming at each cloud
stage carries and how the worker preprocesses frames. ``--json`` prints the reply
header as JSON (``null`` marks a dimension of any size; optional fields the
worker left out appear with their defaults).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

import msgspec

from jetsplit.protocol import Client, RequestTimeout
from jetsplit.protocol.messages import Description, StageInfo, TensorInfo
from jetsplit.tools.remote import add_remote_args, check_endpoint, curve_from_args

__all__ = ["format_description", "main"]

# A fingerprint is never used to pick a bundle here: describe names no bundle.
_NO_BUNDLE = "0" * 64


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def _tensor(t: TensorInfo) -> str:
    shape = ", ".join("?" if d is None else str(d) for d in t.shape)
    text = f"{t.name} {t.dtype} [{shape}]"
    if t.value is not None:
        text += f" = {t.value}"
    return text + (f" ({', '.join(t.encodings)})" if t.encodings else "")


def _stage(s: StageInfo) -> list[str]:
    gate = f", gate {s.gate.kind} >= {s.gate.threshold:.4g}" if s.gate is not None else ""
    lines = [f"  stage {s.index} {s.name!r} on the {s.where}: input {s.input}, combine {s.combine}{gate}"]
    if s.inputs:
        lines.append("    request tensors: " + "; ".join(_tensor(t) for t in s.inputs))
    if s.preprocess is not None:
        p = s.preprocess
        lines.append(f"    frame preprocessing: {p.width}x{p.height} {p.interpolation}, {p.colour}, {p.layout} "
                     f"{p.dtype}, x*{p.scale:.6g}, mean {p.mean}, std {p.std}")
    lines.append("    outputs: " + "; ".join(_tensor(t) for t in s.outputs))
    return lines


def format_description(d: Description) -> str:
    """The human-readable form ``jetsplit describe`` prints."""
    lim = d.limits
    lines = [
        f"worker {d.server or '(unnamed)'}: {d.state}, protocol version {d.v}",
        f"limits: message {_size(lim.max_message_bytes)}, header {_size(lim.max_header_bytes)}, "
        f"{lim.max_tensors} tensors, rank {lim.max_rank}, {lim.max_elements} elements per tensor, "
        f"decoded {_size(lim.max_decoded_bytes)}",
        f"decodes: {' '.join(d.encodings)}; compressions: {' '.join(d.compressions)}",
    ]
    if not d.bundles:
        lines.append("no bundles")
    for b in d.bundles:
        labels = ", ".join(b.labels[:10]) + (", ..." if len(b.labels) > 10 else "")
        lines.append(f"bundle {b.name!r} {b.fingerprint}: {len(b.labels)} labels ({labels})")
        for s in b.stages:
            lines += _stage(s)
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    """Entry point of ``jetsplit describe``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jetsplit describe", description="describe a worker's bundles and limits")
    add_remote_args(parser)
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    args = parser.parse_args(list(argv))
    endpoint = check_endpoint(args.endpoint)
    with Client(endpoint, _NO_BUNDLE, timeout_ms=args.timeout_ms, curve=curve_from_args(args)) as client:
        try:
            description = client.describe()
        except RequestTimeout as exc:
            raise RequestTimeout(f"{exc} (is a worker listening there? does it need CURVE keys: "
                                 "--curve-secret/--curve-server-key?)") from None
    if args.json:
        json.dump(msgspec.to_builtins(description), sys.stdout)
        print()
    else:
        print(format_description(description))
    return 0
