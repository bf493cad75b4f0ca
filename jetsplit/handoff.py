"""The hand-off between sides: what the edge sends so the cloud can resume a chain.

One offloaded frame travels as named tensors (``protocol/SPEC.md`` §"Chain
hand-off" is the normative list):

- ``frame``: the camera frame, HxW or HxWxC uint8 (raw or JPEG on the wire), sent
  when any stage from the resume stage on takes the frame as input; resized to the
  model's input (:meth:`Preprocess.shipped`) unless ``[wire].frame_size = "full"``;
- ``carry``: the previous stage's carried tensor with its batch axis of 1, sent
  when the resume stage takes the carry;
- ``probs`` (1, C) float32 and ``count`` (int32, 0-d): the combined probabilities
  so far and how many stage outputs they average, sent when the resume stage
  combines with them (``average`` for ensembles, ``weighted``).

The cloud checks each request with :func:`validate` (every tensor against what
the bundle's chain expects; a ``DataError`` names the tensor, the expected and the
actual value) and rebuilds a batch from many of them with :func:`stack`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jetsplit import halfcast
from jetsplit.bundle import Bundle
from jetsplit.chain import Chain, ChainState
from jetsplit.errors import DataError
from jetsplit.preprocess import check_frame

__all__ = [
    "CARRY", "COUNT", "FRAME", "PROBS", "Resume", "expected_count", "needed", "pack", "stack", "validate",
    "wire_encodings",
]

FRAME = "frame"
CARRY = "carry"
PROBS = "probs"
COUNT = "count"


def expected_count(bundle: Bundle, stage: int) -> int:
    """How many stage outputs the combined probabilities average on entry to ``stage``."""
    count = 0
    for spec in bundle.stages[:stage]:
        count = count + 1 if spec.combine == "average" and count > 0 else 1
    return count


def needed(bundle: Bundle, stage: int) -> tuple[str, ...]:
    """Tensor names a request resuming at ``stage`` must carry."""
    names: list[str] = []
    if any(s.input == "frame" for s in bundle.stages[stage:]):
        names.append(FRAME)
    if bundle.stages[stage].input == "carry":
        names.append(CARRY)
    if bundle.stages[stage].combine in ("average", "weighted") and stage > 0:
        names += [PROBS, COUNT]
    return tuple(names)


def pack(bundle: Bundle, stage: int, frame: np.ndarray | None, carry: np.ndarray | None,
         state: ChainState | None) -> dict[str, np.ndarray]:
    """The tensors for one frame (row 0 of ``carry``/``state``) resuming at ``stage``."""
    out: dict[str, np.ndarray] = {}
    for name in needed(bundle, stage):
        if name == FRAME:
            if frame is None:
                raise DataError("hand-off: the resume stage needs the frame, none given")
            out[FRAME] = frame if bundle.wire.frame_size == "full" else bundle.preprocess.shipped(frame)
        elif name == CARRY:
            if carry is None:
                raise DataError("hand-off: the resume stage needs the carried tensor, none given")
            out[CARRY] = carry[:1]
        elif name == PROBS:
            if state is None:
                raise DataError("hand-off: the resume stage averages, but no probabilities were given")
            out[PROBS] = state.probs[:1].astype(np.float32)
            out[COUNT] = np.asarray(state.count, np.int32)
    return out


def wire_encodings(bundle: Bundle) -> dict[str, str]:
    """How the hand-off tensors travel, from ``[wire]``: the carry as
    ``activation``, the frame as ``frame``, each ``+compression`` when one is set
    (never on a JPEG frame)
    (the protocol's short form, e.g. ``"f16+lz4"``). ``probs`` and ``count`` are
    small and go raw. The same mapping the edge agent sends with, so that
    ``jetsplit bench`` sizes hand-offs as the agent sends them."""
    wire = bundle.wire
    suffix = "" if wire.compression == "none" else f"+{wire.compression}"
    # A JPEG is compressed already (the protocol refuses jpeg+lz4): the
    # compression applies to the activation and to frames sent raw.
    return {CARRY: wire.activation + suffix, FRAME: wire.frame + ("" if wire.frame == "jpeg" else suffix)}


@dataclass(frozen=True)
class Resume:
    """A batch ready for :meth:`Chain.run_from`."""

    x: np.ndarray
    carry: np.ndarray | None
    state: ChainState | None

    def take(self, index: np.ndarray) -> Resume:
        """The rows ``index`` of the batch (requests dropped after stacking)."""
        return Resume(self.x[index], None if self.carry is None else self.carry[index],
                      None if self.state is None else self.state.take(index))


def _check_one(chain: Chain, stage: int, tensors: Mapping[str, np.ndarray]) -> None:
    bundle = chain.bundle
    want = needed(bundle, stage)
    missing = [n for n in want if n not in tensors]
    extra = sorted(set(tensors) - set(want))
    if missing or extra:
        raise DataError(
            f"stage {stage} ({bundle.stages[stage].name!r}) expects tensors {list(want)}, "
            f"got {sorted(tensors)}"
        )
    if FRAME in tensors:
        check_frame(tensors[FRAME])
    if CARRY in tensors:
        spec = chain.stage(stage).engine.input_spec(chain.stage(stage).input_name)
        arr = tensors[CARRY]
        # float16 for a float32 input: received as sent and widened per batch in stack().
        dtype_ok = arr.dtype == spec.dtype or (arr.dtype == np.float16 and spec.dtype == np.float32)
        ok = dtype_ok and arr.ndim == len(spec.shape) and arr.shape[0] == 1 and all(
            w is None or w == h for w, h in zip(spec.shape[1:], arr.shape[1:])
        )
        if not ok:
            raise DataError(
                f"tensor 'carry': expected (1, {', '.join('?' if d is None else str(d) for d in spec.shape[1:])}) "
                f"{spec.dtype}, got {arr.shape} {arr.dtype}"
            )
    if PROBS in tensors:
        p, c = tensors[PROBS], tensors[COUNT]
        if p.shape != (1, bundle.num_classes) or p.dtype != np.float32:
            raise DataError(f"tensor 'probs': expected (1, {bundle.num_classes}) float32, got {p.shape} {p.dtype}")
        want_count = expected_count(bundle, stage)
        if c.shape != () or not np.issubdtype(c.dtype, np.integer) or int(c) != want_count:
            raise DataError(f"tensor 'count': expected the scalar {want_count}, got {c.dtype} {c.shape} {c!r}")


def validate(chain: Chain, stage: int, tensors: Mapping[str, np.ndarray]) -> None:
    """Raise ``DataError`` unless ``tensors`` resume ``stage`` of ``chain``."""
    _check_one(chain, stage, tensors)


def stack(chain: Chain, stage: int, requests: Sequence[Mapping[str, np.ndarray]]) -> Resume:
    """Validated per-frame tensors -> one batch (frames are preprocessed here)."""
    bundle = chain.bundle
    want = needed(bundle, stage)
    if FRAME in want:
        x = chain.preprocess([r[FRAME] for r in requests])
    else:
        x = np.zeros((len(requests),), np.float32)
    carry = None
    if CARRY in want:
        carry = np.concatenate([r[CARRY] for r in requests])
        if carry.dtype == np.float16:
            st = chain.stage(stage)
            if st.engine.input_spec(st.input_name).dtype == np.float32:
                carry = halfcast.to_float32(carry)
    state = None
    if PROBS in want:
        state = ChainState(np.concatenate([r[PROBS] for r in requests]), expected_count(bundle, stage))
    return Resume(x, carry, state)
