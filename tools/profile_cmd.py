"""``jetsplit profile``: the calibration profiler, with wire bytes and score errors
measured by the protocol's own codec.

Calibration does not import the protocol (dependencies point toward the core), so
the command is assembled here: :func:`jetsplit.calibration.cli.profile_main` with
:func:`wire_bytes` as its measure of what an encoding sends, and, after the table,
every encoding's bytes and score error at the recommended cut
(:mod:`jetsplit.tools.wirecost`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jetsplit.calibration.builder import scores_output
from jetsplit.calibration.cli import profile_main
from jetsplit.calibration.profile import Profile
from jetsplit.calibration.split import real_inputs, split_model
from jetsplit.engines import open_engine
from jetsplit.errors import ConfigError
from jetsplit.gates import class_scores, softmax
from jetsplit.protocol.codec import encode_tensor
from jetsplit.tools.wirecost import ENCODINGS, EncodingCost, encoding_costs, format_costs

__all__ = ["encoding_costs_at", "encodings_at_recommended", "main", "wire_bytes"]

# Real photographs the score errors are measured on.
_SAMPLES = 6


def wire_bytes(activation: np.ndarray, encoding: str) -> float:
    """Mean payload bytes per sample of ``activation`` (a batch) in ``encoding``
    (``fp32`` is the protocol's ``raw``)."""
    spec = "raw" + encoding[4:] if encoding.startswith("fp32") else encoding
    x = np.ascontiguousarray(activation, np.float32)
    sizes = [encode_tensor("carry", x[i : i + 1], spec)[0].nbytes for i in range(len(x))]
    return float(np.mean(sizes)) if sizes else 0.0


def encodings_at_recommended(profile: Profile) -> list[str]:
    """Each encoding's bytes and score error at the recommended cut (a single-tensor
    one), the tail run on the decoded activations of real photographs."""
    best = profile.recommended
    if best.kind != "cut" or len(best.tensors) != 1:
        return []
    cut = best.tensors[0]
    try:
        costs, samples = encoding_costs_at(profile.model, cut, _SAMPLES)
    except ConfigError:  # several outputs, none named: bytes alone were shown above
        return []
    return ["", f"at the recommended cut {cut}:", *format_costs(costs, samples)]


def encoding_costs_at(model: str | Path, cut: str, samples: int = _SAMPLES,
                      encodings: Sequence[str] = ENCODINGS) -> tuple[list[EncodingCost], int]:
    """Each encoding's bytes and score error at single-tensor ``cut`` of ``model`` on
    ``samples`` real photographs: the head's activations encoded by the protocol's
    codec, decoded, and run through the tail (raises ConfigError when the model has
    several outputs and none is named)."""
    out, kind = scores_output(Path(model))
    inputs = real_inputs(model, count=samples)
    with tempfile.TemporaryDirectory(prefix="jetsplit-profile-wire-") as tmp:
        parts = split_model(model, [cut], Path(tmp))
        with open_engine(parts.head_path) as head, open_engine(parts.tail_path) as tail:
            carry = head.infer(inputs)[cut]

            def probs_of(x: np.ndarray) -> np.ndarray:
                scores = class_scores(tail.infer({cut: x})[out])
                return scores if kind == "probs" else softmax(scores)  # never softmaxed twice

            return encoding_costs(carry, probs_of, encodings), len(carry)


def main(argv: Sequence[str]) -> int:
    return profile_main(argv, wire_bytes_of=wire_bytes, more=encodings_at_recommended)
