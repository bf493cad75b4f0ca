"""Edge times per cut at other precisions (fp16, INT8 QDQ), on request.

The whole model is converted (:func:`jetsplit.calibration.quantize.convert`; INT8
calibrated on real images), profiled once like the fp32 model
(:mod:`.nodetime`), and each cut gets its head's share of the converted model's
time. Converters keep the tensor names of the float graph (QDQ wraps them; fp16
adds casts at the edges), so a cut is found by name; one that is not there reads
as unknown.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .graph import CutPoint, ModelGraph, load_graph
from .modelfile import save_model
from .nodetime import ancestors, profile_nodes
from .quantize import convert
from .split import BATCH_DIM

__all__ = ["PrecisionTimes", "precision_times"]

# precision -> (whole-model ms, cut tensors -> head ms or None)
PrecisionTimes = dict[str, tuple[float, dict[tuple[str, ...], float | None]]]


def precision_times(graph: ModelGraph, cuts: Sequence[CutPoint], sample: Mapping[str, np.ndarray],
                    calib: Mapping[str, np.ndarray], precisions: Sequence[str], runs: int, warmup: int,
                    time_model: Callable[[Path], float]) -> PrecisionTimes:
    """Per precision: the whole converted model's time (``time_model``) and each cut's head share of it."""
    out: PrecisionTimes = {}
    with tempfile.TemporaryDirectory(prefix="jetsplit-precision-") as tmp:
        source = Path(tmp) / "model.onnx"
        # The batched form: INT8 calibration feeds a batch, which a batch-1 file refuses.
        save_model(graph.batched_model(BATCH_DIM), source, external=bool(graph.external))
        name = graph.inputs[0]
        for precision in precisions:
            converted = convert(precision, source, Path(tmp) / f"model.{precision}.onnx", calib[name], name)
            other = load_graph(converted)
            full = time_model(converted)
            shares = profile_nodes(other, sample, runs, warmup)
            heads: dict[tuple[str, ...], float | None] = {}
            for cut in cuts:
                found = all(t in other.producer for t in cut.tensors)
                heads[cut.tensors] = full * shares.share(ancestors(other, cut.tensors)) if found else None
            out[precision] = (full, heads)
    return out
