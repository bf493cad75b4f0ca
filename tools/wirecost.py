"""What each activation encoding costs on real activations: bytes, and score error.

Post-ReLU activations of real images are mostly zeros and small values, so how a
cut travels matters as much as where it is: fp32, f16, i8 (one scale per tensor),
and i8 with lz4 or zstd entropy coding (the zeros compress). Each encoding is run
through the protocol's own codec (what the edge sends, byte for byte: the payload
frame, header excluded), decoded as the cloud decodes it, and the tail is run on
the decoded tensors, so the score error is the one the cloud would answer with.

    >>> costs = encoding_costs(carry, lambda x: tail_probs(x))        # doctest: +SKIP
    >>> [(c.encoding, c.bytes, c.top1_agree) for c in costs]          # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from jetsplit.protocol.codec import decode_tensor, encode_tensor

__all__ = ["ENCODINGS", "EncodingCost", "encoding_costs", "format_costs"]

# fp32 is the reference: the raw float32 tensor.
ENCODINGS = ("raw", "f16", "i8", "i8+lz4", "i8+zstd")


@dataclass(frozen=True)
class EncodingCost:
    """One encoding over a set of samples.

    ``bytes`` is the mean payload per sample; ``ratio`` how many times smaller
    than fp32; ``max_abs_prob_err`` the largest change of any class probability
    the tail answers with; ``top1_agree`` the share of samples whose top-1 class
    is the fp32 tensor's.
    """

    encoding: str
    bytes: float
    ratio: float
    max_abs_prob_err: float
    top1_agree: float

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def encoding_costs(carry: np.ndarray, probs_of: Callable[[np.ndarray], np.ndarray] | None = None,
                   encodings: Sequence[str] = ENCODINGS) -> list[EncodingCost]:
    """Encode each sample of ``carry`` (``(N, ...)`` float32) in each encoding and
    decode it; ``probs_of`` maps a batch of carries to class probabilities (the
    tail), for the score error (NaN without it)."""
    x = np.ascontiguousarray(carry, np.float32)
    reference = probs_of(x) if probs_of is not None else None
    fp32_bytes = x[0].nbytes if len(x) else 0
    out = []
    for enc in encodings:
        sizes, decoded = [], []
        for i in range(len(x)):
            desc, payload = encode_tensor("carry", x[i : i + 1], enc)
            sizes.append(desc.nbytes)
            decoded.append(np.asarray(decode_tensor(desc, payload), np.float32))
        mean = float(np.mean(sizes)) if sizes else 0.0
        err, agree = float("nan"), float("nan")
        if reference is not None and probs_of is not None and decoded:
            got = probs_of(np.concatenate(decoded))
            err = float(np.abs(got.astype(np.float64) - reference).max())
            agree = float((got.argmax(axis=1) == reference.argmax(axis=1)).mean())
        out.append(EncodingCost(enc, mean, fp32_bytes / mean if mean else float("inf"), err, agree))
    return out


def format_costs(costs: Sequence[EncodingCost], samples: int) -> list[str]:
    """Table lines, fp32 first."""
    lines = [f"activation encodings on {samples} real samples (payload per sample; tail run on the decoded tensor):"]
    header = ["encoding", "bytes", "x smaller", "max |prob err|", "top-1 same"]
    rows = [[("fp32" if c.encoding == "raw" else c.encoding), f"{c.bytes:,.0f}", f"{c.ratio:.1f}",
             f"{c.max_abs_prob_err:.2e}", f"{100 * c.top1_agree:.1f}%"] for c in costs]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        lines.append("  ".join(cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i])
                               for i, cell in enumerate(row)).rstrip())
    return lines
