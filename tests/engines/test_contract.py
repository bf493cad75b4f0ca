"""The engine contract, run against every backend this machine can run.

On ONNX Runtime each zoo model's outputs are compared with ONNX's reference
evaluator (pure numpy, an independent implementation of the operators).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

from jetsplit.datasets import load_dataset
from jetsplit.demo import ZOO_DIR
from jetsplit.engines import BACKENDS, open_engine
from jetsplit.errors import EngineError
from jetsplit.preprocess import Preprocess


def _gpu_skip_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "tensorrt not importable on this machine"
    try:
        from cuda.bindings import runtime as cudart  # type: ignore[import-not-found]
    except ImportError:
        return "cuda-python not importable on this machine"
    err, count = cudart.cudaGetDeviceCount()
    return None if int(err) == 0 and count > 0 else "no CUDA device"


def _backends() -> list[object]:
    params: list[object] = []
    for name in BACKENDS:
        reason = _gpu_skip_reason() if name == "tensorrt" else None
        marks = [pytest.mark.gpu, pytest.mark.skipif(reason is not None, reason=reason or "")] if name == "tensorrt" else []
        params.append(pytest.param(name, marks=marks, id=name))
    return params


def _options(backend: str, tmp_path: Path) -> dict[str, object]:
    return {"precision": "fp32", "cache_dir": tmp_path} if backend == "tensorrt" else {}


ZOO_MODELS = sorted(p.name for p in ZOO_DIR.glob("*.onnx"))
MNIST = Preprocess(28, 28, colour="gray", mean=(0.1307,), std=(0.3081,))


@pytest.mark.parametrize("backend", _backends())
def test_specs_validation_and_timing(backend: str, tiny_models: dict[str, Path], tmp_path: Path) -> None:
    with open_engine(tiny_models["head"], backend, **_options(backend, tmp_path)) as eng:
        (inp,) = eng.inputs
        assert inp.name == "image" and inp.dtype == np.float32 and inp.shape[1:] == (1, 8, 8)
        assert {o.name for o in eng.outputs} == {"act", "exit_logits"}
        x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        out = eng.infer({"image": x})
        assert out["act"].shape == (3, 32) and out["exit_logits"].shape == (3, 10)
        assert eng.last_time_ms > 0
        with pytest.raises(EngineError, match=r"input 'image' dtype: expected float32, got float64"):
            eng.infer({"image": x.astype(np.float64)})
        with pytest.raises(EngineError, match=r"input 'image' shape: expected \(\?, 1, 8, 8\), got \(3, 1, 8, 9\)"):
            eng.infer({"image": np.zeros((3, 1, 8, 9), np.float32)})
        with pytest.raises(EngineError, match=r"feeds missing \['image'\], unexpected \['img'\]"):
            eng.infer({"img": x})


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("model", ZOO_MODELS)
def test_zoo_model_matches_reference(backend: str, model: str, tmp_path: Path) -> None:
    path = ZOO_DIR / model
    data = load_dataset("mnist", "test")
    x = MNIST.batch(data.images[:8])
    with open_engine(path, backend, **_options(backend, tmp_path)) as eng:
        feeds = {eng.inputs[0].name: x}
        if eng.inputs[0].name != "image":  # a tail: feed the head's real activation
            with open_engine(ZOO_DIR / model.replace("tail", "head")) as head:
                feeds = {eng.inputs[0].name: head.infer({"image": x})[eng.inputs[0].name]}
        got = eng.infer(feeds)
    ref = ReferenceEvaluator(onnx.load(str(path)))
    names = [o.name for o in ref.proto_.graph.output]
    want = dict(zip(names, ref.run(None, feeds)))
    for name in names:
        np.testing.assert_allclose(got[name], want[name], atol=1e-4, rtol=0, err_msg=f"{model}:{name}")


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no such file"):
        open_engine(tmp_path / "none.onnx")


def test_garbage_model_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(EngineError, match="ONNX Runtime cannot load it"):
        open_engine(bad)


def test_unknown_backend_and_provider(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(EngineError, match="engine backend 'openvino': expected one of onnxruntime, tensorrt"):
        open_engine(tiny_models["little"], "openvino")
    with pytest.raises(EngineError, match=r"execution providers \['CUDAExecutionProvider'\] are not in this ONNX Runtime"):
        open_engine(tiny_models["little"], providers=["CUDAExecutionProvider"])
