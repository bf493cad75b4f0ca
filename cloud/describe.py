"""What a worker says about its bundles in reply to ``describe`` (SPEC.md 3.8).

A client written from the spec alone learns here everything it needs to form an
``infer`` request: per bundle its fingerprint and labels, per stage where it runs,
the tensors a request resuming there carries (with dtypes, shapes and the
encodings the worker takes for each), how the worker preprocesses a ``frame``, and
what the stage produces. Built once when the worker starts, from the same bundle
and chain objects the worker validates requests against (jetsplit/handoff.py), so
the description cannot promise what validation refuses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from jetsplit.bundle import Bundle
from jetsplit.chain import Chain
from jetsplit.engines.base import TensorSpec
from jetsplit.handoff import CARRY, COUNT, FRAME, PROBS, expected_count, needed
from jetsplit.protocol.messages import BundleInfo, GateInfo, PreprocessInfo, StageInfo, TensorInfo

__all__ = ["describe_bundle"]

_FLOATS = ("float16", "float32", "float64")


def describe_bundle(bundle: Bundle, chain: Chain, compressions: Sequence[str]) -> BundleInfo:
    """The ``describe`` entry of one served bundle; ``chain`` has its cloud stages
    open; ``compressions`` are those this worker can decode."""
    stages = [_stage(bundle, chain, i, list(compressions)) for i in range(len(bundle.stages))]
    return BundleInfo(name=bundle.name, fingerprint=bundle.fingerprint, labels=list(bundle.labels), stages=stages)


def _stage(bundle: Bundle, chain: Chain, index: int, compressions: list[Any]) -> StageInfo:
    spec = bundle.stages[index]
    inputs: list[TensorInfo] = []
    if spec.where == "cloud":
        inputs = [_input(bundle, chain, index, name, compressions) for name in needed(bundle, index)]
    pre = bundle.preprocess
    preprocess = None
    if any(t.name == FRAME for t in inputs):
        preprocess = PreprocessInfo(
            height=pre.height, width=pre.width, colour=pre.colour, layout=pre.layout,
            dtype=pre.dtype,  # type: ignore[arg-type]  # checked by Preprocess
            scale=float(pre.scale), mean=[float(m) for m in pre.mean], std=[float(s) for s in pre.std],
            interpolation=pre.interpolation,
        )
    outputs = [TensorInfo(name=PROBS, dtype="float32", shape=[1, bundle.num_classes])]
    carried = _carried(chain, index)
    if carried is not None:
        outputs.append(TensorInfo(name=CARRY, dtype=_dtype(carried), shape=[1, *carried.shape[1:]]))
    gate = None if spec.gate is None else GateInfo(kind=spec.gate.kind, threshold=float(spec.gate.threshold))
    return StageInfo(
        index=index, name=spec.name,
        where=spec.where,  # type: ignore[arg-type]  # checked by the bundle loader
        input=spec.input,  # type: ignore[arg-type]
        combine=spec.combine,  # type: ignore[arg-type]
        inputs=inputs, preprocess=preprocess, outputs=outputs, gate=gate,
    )


def _input(bundle: Bundle, chain: Chain, index: int, name: str, compressions: list[Any]) -> TensorInfo:
    if name == FRAME:
        # The shape the preprocessing takes without converting; SPEC.md 12 lists
        # the other frame shapes a worker accepts (and converts).
        channels = bundle.preprocess.channels
        return TensorInfo(name=FRAME, dtype="uint8", shape=[None, None, channels], encodings=["raw", "jpeg"],
                          compressions=compressions)
    if name == CARRY:
        st = chain.stage(index)
        spec = st.engine.input_spec(st.input_name)
        dtype = _dtype(spec)
        encodings: list[Any] = ["raw", "f16", "i8"] if dtype in _FLOATS else ["raw"]
        return TensorInfo(name=CARRY, dtype=dtype, shape=[1, *spec.shape[1:]], encodings=encodings,
                          compressions=compressions)
    if name == PROBS:
        return TensorInfo(name=PROBS, dtype="float32", shape=[1, bundle.num_classes], encodings=["raw"],
                          compressions=compressions)
    assert name == COUNT
    return TensorInfo(name=COUNT, dtype="int32", shape=[], encodings=["raw"], value=expected_count(bundle, index))


def _carried(chain: Chain, index: int) -> TensorSpec | None:
    """The tensor stage ``index`` hands on, from whichever side has it open."""
    spec = chain.bundle.stages[index]
    if spec.carry is None:
        return None
    own = chain.stages[index]
    if own is not None:
        return own.engine.output_spec(spec.carry)
    nxt = chain.stages[index + 1] if index + 1 < len(chain.stages) else None
    if nxt is not None and nxt.spec.input == "carry":
        return nxt.engine.input_spec(nxt.input_name)
    return None


def _dtype(spec: TensorSpec) -> Any:
    return np.dtype(spec.dtype).name
