"""Reduced precision: INT8 (QDQ, static) and FP16, and what each one costs in
accuracy and in score margins.

INT8 is ONNX Runtime's static quantization in QDQ form, symmetric for weights and
activations (TensorRT reads QDQ models and wants symmetric scales; TensorRT 10
deprecated and 11 removed the implicit INT8 calibrators), weights per channel,
activation ranges calibrated on the *calib* split through a
``CalibrationDataReader``. The exit and gate nodes jetsplit adds (named
``jetsplit_exit/...``) stay in float: they cost nothing and keep the scores that
the thresholds cut unshifted.

FP16 uses onnxconverter-common's ``convert_float_to_float16`` with float32 graph
inputs and outputs, so preprocessing and carried tensors keep their types.

Precision shifts the score margins, so thresholds are tuned per precision: the
calibrate command tunes on the converted models, and :func:`compare_precision`
reports, per stage, the accuracy delta and mean |margin_fp32 - margin_prec|.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from jetsplit.errors import ConfigError
from jetsplit.gates import margin_score, softmax

from .exits import MAX_IR_VERSION, NODE_PREFIX

__all__ = ["PRECISIONS", "ArrayReader", "PrecisionShift", "compare_precision", "convert", "to_fp16", "to_int8"]

PRECISIONS = ("fp32", "fp16", "int8")


class ArrayReader:
    """``CalibrationDataReader`` over an array of model inputs, in batches.

    ONNX Runtime's reader protocol: ``get_next()`` returns one feed dict or None
    at the end; ``rewind()`` starts over (the entropy/percentile calibrators read
    twice).
    """

    def __init__(self, input_name: str, inputs: np.ndarray, batch: int = 32) -> None:
        self.input_name = input_name
        self.inputs = inputs
        self.batch = batch
        self._it: Iterator[dict[str, np.ndarray]] = iter(())
        self.rewind()

    def _gen(self) -> Iterator[dict[str, np.ndarray]]:
        for lo in range(0, len(self.inputs), self.batch):
            yield {self.input_name: self.inputs[lo : lo + self.batch]}

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = self._gen()


# The first opset whose DequantizeLinear takes a per-channel axis.
_QDQ_OPSET = 13


def _cap_ir(path: Path) -> None:
    model = onnx.load(str(path))
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))


def to_int8(src: Path, dst: Path, calib_inputs: np.ndarray, input_name: str | None = None) -> Path:
    """Static INT8 QDQ quantization of ``src`` calibrated on ``calib_inputs``."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    model = onnx.load(str(src))
    name = input_name or model.graph.input[0].name
    keep_float = [n.name for n in model.graph.node if n.name.startswith(NODE_PREFIX)]
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), _QDQ_OPSET)
    if opset < _QDQ_OPSET:
        # Per-channel DequantizeLinear (its axis) needs opset 13; ONNX Runtime's
        # quantizer only lifts older models to 11, which it then cannot load.
        from onnx import version_converter

        lifted = version_converter.convert_version(model, _QDQ_OPSET)
        lifted.ir_version = max(lifted.ir_version, 7)
        src = dst.with_name(dst.stem + ".opset13.onnx")
        onnx.save(lifted, str(src))
        model = lifted

    sums = [n for n in model.graph.node if n.op_type == "Sum" and len(n.input) == 2]
    if sums:
        # A two-input Sum is an Add (older exports write residual joins so), but
        # ONNX Runtime quantizes Add only: a Sum keeps its block in float.
        for node in sums:
            node.op_type = "Add"
        src = dst.with_name(dst.stem + ".add.onnx")
        onnx.save(model, str(src))
    if any(n.op_type == "BatchNormalization" for n in model.graph.node):
        # Batch norms left beside their convolutions (older exports, the model zoo's)
        # would stay float between a DequantizeLinear and a QuantizeLinear each:
        # fold them into the convolutions first, as ONNX Runtime advises.
        from onnxruntime.quantization.shape_inference import quant_pre_process

        folded = dst.with_name(dst.stem + ".folded.onnx")
        quant_pre_process(str(src), str(folded), skip_symbolic_shape=True)
        src = folded

    class _Reader(ArrayReader, CalibrationDataReader):  # ORT checks the base class
        pass

    quantize_static(
        str(src),
        str(dst),
        _Reader(name, calib_inputs),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=keep_float,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    _cap_ir(dst)
    return dst


def to_fp16(src: Path, dst: Path) -> Path:
    """FP16 weights and compute, float32 graph inputs and outputs."""
    try:
        from onnxconverter_common import float16
    except ImportError:
        raise ConfigError("--precision fp16 needs onnxconverter-common (pip install onnxconverter-common)") from None
    model = float16.convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    model.ir_version = min(model.ir_version or MAX_IR_VERSION, MAX_IR_VERSION)
    onnx.save(model, str(dst))
    return dst


def convert(precision: str, src: Path, dst: Path, calib_inputs: np.ndarray | None = None,
            input_name: str | None = None) -> Path:
    """``src`` in ``precision`` at ``dst`` (fp32: returns ``src``)."""
    if precision == "fp32":
        return src
    if precision == "fp16":
        return to_fp16(src, dst)
    if precision == "int8":
        if calib_inputs is None:
            raise ConfigError("int8 needs calibration inputs")
        return to_int8(src, dst, calib_inputs, input_name)
    raise ConfigError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")


@dataclass(frozen=True)
class PrecisionShift:
    """What one stage lost by the precision change, on the calib split."""

    stage: str
    precision: str
    accuracy_fp32: float
    accuracy: float
    mean_abs_margin_shift: float
    prediction_flips: float

    @property
    def accuracy_delta(self) -> float:
        return self.accuracy - self.accuracy_fp32

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "precision": self.precision,
            "accuracy_fp32": self.accuracy_fp32,
            "accuracy": self.accuracy,
            "accuracy_delta": self.accuracy_delta,
            "mean_abs_margin_shift": self.mean_abs_margin_shift,
            "prediction_flips": self.prediction_flips,
        }


def compare_precision(stage: str, precision: str, scores_fp32: np.ndarray, scores_prec: np.ndarray,
                      labels: np.ndarray, scores_kind: str = "logits") -> PrecisionShift:
    """Accuracy and margin shift of one stage's own scores, fp32 against ``precision``."""
    def probs(s: np.ndarray) -> np.ndarray:
        return softmax(s) if scores_kind == "logits" else s.astype(np.float32)

    p32, pp = probs(scores_fp32), probs(scores_prec)
    y32, yp = p32.argmax(axis=1), pp.argmax(axis=1)
    return PrecisionShift(
        stage=stage,
        precision=precision,
        accuracy_fp32=float((y32 == labels).mean()),
        accuracy=float((yp == labels).mean()),
        mean_abs_margin_shift=float(np.abs(margin_score(p32) - margin_score(pp)).mean()),
        prediction_flips=float((y32 != yp).mean()),
    )
