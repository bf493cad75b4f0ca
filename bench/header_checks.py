"""What protocol version 2's header checks cost per message.

Version 2 refuses a header whose maps repeat a key (msgspec alone keeps the last
copy silently: protocol/peek.py) on top of the strict decode version 1 did.
Measured here as a ratio, side by side in one process, interleaved runs, medians:
``decode_header`` (size check, strict decode, version check, repeated-key check)
against what version 1's did (the same without the repeated-key check), for the
headers a worker and a client read on every request: a ``ping``, an ``infer``
with one frame tensor, a ``result`` with ten scores.
Recorded in ``bench/results/header_checks.json``.

    .venv/bin/python bench/header_checks.py
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/support
from jetsplit.protocol.codec import (
    DEFAULT_LIMITS,
    decode_header,
    encode_header,
    encode_infer,
    ping_for,
    result_for,
)
from jetsplit.protocol.messages import SUPPORTED_VERSIONS, InferRequest, Message
from tests.support.machine import describe  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "header_checks.json"
RUNS = 9
CALLS = 20_000


def _per_call_us(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        fn()
    return (time.perf_counter() - start) / CALLS * 1e6


def run() -> dict[str, Any]:
    infer = bytes(encode_infer(7, "ab" * 32, 1, 150.0, {"frame": np.zeros((28, 28), np.uint8)})[0])
    request = msgspec.msgpack.Decoder(InferRequest).decode(infer)
    headers = {
        "ping": encode_header(ping_for(7)),
        "infer (one tensor)": infer,
        "result (10 scores)": encode_header(result_for(request, np.linspace(0.0, 1.0, 10), 1)[0]),
    }
    strict = msgspec.msgpack.Decoder(Message)
    limits = DEFAULT_LIMITS

    def version_1(header: bytes) -> object:
        view = memoryview(header)
        if view.nbytes > limits.max_header_bytes:
            raise ValueError("too large")
        msg = strict.decode(view)
        if msg.v not in SUPPORTED_VERSIONS:
            raise ValueError("version")
        return msg

    out: dict[str, Any] = {}
    for name, header in headers.items():
        base, v2 = [], []
        for _ in range(RUNS):  # interleaved: both see the same machine load
            base.append(_per_call_us(lambda h=header: version_1(h)))
            v2.append(_per_call_us(lambda h=header: decode_header(h)))
        out[name] = {"bytes": len(header), "version_1_us": round(statistics.median(base), 3),
                     "decode_header_us": round(statistics.median(v2), 3),
                     "ratio": round(statistics.median(v2) / statistics.median(base), 3)}
    return out


def main() -> int:
    record = {"benchmark": "header_checks", "runs": RUNS, "calls_per_run": CALLS, "results": run(),
              "machine": describe()}
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
