"""INT8 (static QDQ, symmetric, per channel) and FP16 conversions run in ONNX
Runtime, keep float32 inputs and outputs, and report accuracy and margin shift."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from jetsplit.calibration.quantize import compare_precision, to_fp16, to_int8
from jetsplit.datasets import load_dataset


def _digits_model(path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    data = load_dataset("digits", "train")
    x = (data.images.astype(np.float32) / 255.0)[:, None]
    conv = rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32)
    feats_model = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["px", "k"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("Flatten", ["r"], ["f"])], "f",
        [helper.make_tensor_value_info("px", TensorProto.FLOAT, ["n", 1, 8, 8])],
        [helper.make_tensor_value_info("f", TensorProto.FLOAT, ["n", 512])], [numpy_helper.from_array(conv, "k")]),
        opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    feats = ort.InferenceSession(feats_model.SerializeToString()).run(None, {"px": x})[0]
    clf = LogisticRegression(max_iter=300).fit(feats, data.labels)
    g = feats_model.graph
    g.initializer.extend([numpy_helper.from_array(clf.coef_.astype(np.float32), "w"),
                          numpy_helper.from_array(clf.intercept_.astype(np.float32), "b")])
    g.node.append(helper.make_node("Gemm", ["f", "w", "b"], ["scores"], transB=1))
    del g.output[:]
    g.output.append(helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 10]))
    onnx.save(feats_model, str(path))
    calib = load_dataset("digits", "calib")
    return path, (calib.images.astype(np.float32) / 255.0)[:, None], calib.labels


def test_int8_and_fp16(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    src, x, y = _digits_model(tmp_path / "m.onnx")
    ref = ort.InferenceSession(str(src)).run(None, {"px": x})[0]
    with caplog.at_level(logging.WARNING):
        q = to_int8(src, tmp_path / "m.int8.onnx", x)
    # ONNX Runtime's "Please consider to run pre-processing" advice is dropped (jetsplit/quiet.py).
    assert not [r for r in caplog.records if "pre-processing" in r.getMessage()]
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    with caplog.at_level(logging.WARNING), warnings.catch_warnings():
        warnings.simplefilter("error")  # a library warning escaping to the console fails the test
        h = to_fp16(src, tmp_path / "m.fp16.onnx")
    assert [r.getMessage() for r in caplog.records] == [
        "fp16 m.onnx: weights too small for float16 were rounded to its smallest value (the accuracy shift "
        "calibrate reports includes it)"]
    for path, name in ((q, "int8"), (h, "fp16")):
        sess = ort.InferenceSession(str(path))
        assert sess.get_inputs()[0].type == "tensor(float)" and sess.get_outputs()[0].type == "tensor(float)"
        got = sess.run(None, {"px": x})[0]
        shift = compare_precision("m", name, ref, got, y)
        assert shift.accuracy_fp32 > 0.9
        assert abs(shift.accuracy_delta) < 0.05 and shift.mean_abs_margin_shift < 0.1
