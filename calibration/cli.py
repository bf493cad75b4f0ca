"""``jetsplit profile`` and ``jetsplit split``: where to cut a model, and the cut itself.

    $ jetsplit profile big.onnx --bandwidth-mbps 20 --cloud-speedup 8
    $ jetsplit profile big.onnx --json
    $ jetsplit split big.onnx --at /layer2/relu_1/Relu_output_0 --out build/big-split
    $ jetsplit split res.onnx --at b1_relu1 --at b0_out --out build/res --data mnist

Errors in what the user asked for (an unknown tensor, a set that is not a cut, a
split that does not reproduce the model) are ``JetsplitError``s: the dispatcher
prints one line and exits 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .profile import Profile, WireBytes

__all__ = ["profile_main", "split_main"]


def profile_main(
    argv: Sequence[str],
    wire_bytes_of: WireBytes | None = None,
    more: Callable[[Profile], list[str]] | None = None,
) -> int:
    """List candidate cuts with sizes and measured latency share; recommend one.

    ``wire_bytes_of`` measures what an encoding sends, and ``more`` adds lines
    after the table (``jetsplit profile`` passes the protocol codec's measures,
    see :mod:`jetsplit.tools.profile_cmd`)."""
    from .graph import WIRE_BYTES
    from .profile import (
        DEFAULT_BANDWIDTH_MBPS,
        DEFAULT_CLOUD_SPEEDUP,
        Link,
        format_table,
        profile_model,
    )
    from .split import real_inputs

    parser = argparse.ArgumentParser(
        prog="jetsplit profile",
        description="List every candidate cut of an ONNX model (a tensor every input-to-output "
        "path goes through) with its activation size and the measured share of latency before "
        "it, and recommend the cut with the least per-frame latency for a link and a cloud.",
    )
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument(
        "--bandwidth-mbps",
        type=float,
        default=DEFAULT_BANDWIDTH_MBPS,
        metavar="B",
        help=f"uplink bandwidth in Mbit/s (default {DEFAULT_BANDWIDTH_MBPS:g})",
    )
    parser.add_argument(
        "--cloud-speedup",
        type=float,
        default=DEFAULT_CLOUD_SPEEDUP,
        metavar="S",
        help=f"how many times faster the cloud runs the tail (default {DEFAULT_CLOUD_SPEEDUP:g})",
    )
    parser.add_argument(
        "--wire",
        choices=[f"{b}{c}" for b in sorted(WIRE_BYTES) for c in ("", "+lz4", "+zstd")],
        default="fp32",
        help="activation encoding on the wire, for the recommendation (default fp32); "
        "entropy-coded ones are measured on real activations",
    )
    parser.add_argument(
        "--cut",
        action="append",
        default=[],
        metavar="T1[,T2...]",
        help="also profile this multi-tensor cut (repeatable)",
    )
    parser.add_argument(
        "--data",
        metavar="SPEC",
        help="dataset to take the timed image from (default: scikit-image's photographs)",
    )
    parser.add_argument(
        "--runs", type=int, default=15, help="timed runs per model, median taken (default 15)"
    )
    parser.add_argument(
        "--precision",
        action="append",
        default=[],
        choices=("fp16", "int8"),
        help="also give each cut's edge time in this precision (repeatable; int8 is calibrated on "
        "the real images)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of a table"
    )
    args = parser.parse_args(list(argv))

    link = Link(args.bandwidth_mbps, args.cloud_speedup, args.wire)
    inputs = real_inputs(args.model, data=args.data, count=1) if args.data else None
    cuts = [[name for name in spec.split(",") if name] for spec in args.cut]
    profile = profile_model(
        args.model,
        inputs,
        link=link,
        runs=args.runs,
        extra_cuts=cuts,
        wire_bytes_of=wire_bytes_of,
        precisions=args.precision,
    )
    if args.json:
        json.dump(profile.to_json(), sys.stdout, indent=2)
        print()
    else:
        print(format_table(profile))
        for line in more(profile) if more is not None else []:
            print(line)
    return 0


def split_main(argv: Sequence[str]) -> int:
    """Cut a model into head and tail files and verify head-then-tail equals the model."""
    from .split import DEFAULT_ATOL, real_inputs, split_model, verify_split

    parser = argparse.ArgumentParser(
        prog="jetsplit split",
        description="Cut an ONNX model at named tensors into <stem>.head.onnx (inputs -> cut) and "
        "<stem>.tail.onnx (cut -> outputs), then check on real images that head-then-tail gives "
        "the full model's outputs.",
    )
    parser.add_argument("model", help="ONNX model file")
    parser.add_argument(
        "--at",
        action="append",
        required=True,
        metavar="TENSOR",
        help="a cut tensor; repeat, or join with commas (T1,T2), for a multi-tensor cut "
        "(see `jetsplit profile`)",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="folder for the head and tail files"
    )
    parser.add_argument(
        "--head-output",
        action="append",
        default=[],
        metavar="TENSOR",
        help="an extra tensor the head also returns, e.g. an early exit (repeatable)",
    )
    parser.add_argument(
        "--data", metavar="SPEC", help="dataset for the check (default: scikit-image's photographs)"
    )
    parser.add_argument("--count", type=int, default=4, help="images in the check (default 4)")
    parser.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"largest allowed absolute difference (default {DEFAULT_ATOL:g})",
    )
    args = parser.parse_args(list(argv))

    cut = [name.strip() for spec in args.at for name in spec.split(",") if name.strip()]
    result = split_model(args.model, cut, args.out, head_outputs=args.head_output)
    inputs = real_inputs(args.model, data=args.data, count=args.count)
    check = verify_split(args.model, result, inputs, atol=args.atol)
    print(
        f"head: {result.head_path}  (inputs -> {', '.join(result.cut_tensors + result.head_outputs)})"
    )
    print(f"tail: {result.tail_path}  ({', '.join(result.cut_tensors)} -> outputs)")
    if result.batch_rewrites:
        nodes = result.batch_rewrites
        shown = ", ".join(nodes[:5]) + (f", ... ({len(nodes)} nodes)" if len(nodes) > 5 else "")
        print(f"batch: made polymorphic the batch of 1 written into {shown}")
    for part in result.batch_one:
        print(f"batch: the {part} pins a batch of 1 that cannot be proven safe to free; "
              "it runs one sample at a time")
    source = args.data or "scikit-image photographs"
    print(
        f"verified on {check.samples} images from {source}: max abs diff {check.max_abs_diff:.3g} "
        f"(tolerance {args.atol:g})"
    )
    return 0
