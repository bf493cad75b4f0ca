"""The TensorRT backend: what runs on any host, and what needs a GPU.

Without a GPU these tests check the rules the backend applies before TensorRT is
touched: the engine-cache key, the cache files, option and precision validation,
the QDQ detector, zero-copy selection, CUDA error naming, and the one-line error
when tensorrt or cuda-python is missing. Tests marked ``gpu`` build real plans and
skip, saying why, where TensorRT or a CUDA device is absent.
"""

from __future__ import annotations

import dataclasses
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from jetsplit.engines import open_engine
from jetsplit.engines.tensorrt import TensorRTEngine
from jetsplit.engines.tensorrt_cache import (
    BatchProfile,
    EngineKey,
    atomic_write,
    default_cache_dir,
    inspect_model,
    is_qdq_model,
    model_digest,
    timing_cache_path,
    validate_precision,
)
from jetsplit.engines.tensorrt_cuda import Cuda, use_mapped_memory
from jetsplit.errors import EngineError

# -- tiny models ----------------------------------------------------------------------

_W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0 - 0.5
_B = np.array([0.1, -0.2, 0.3], dtype=np.float32)


def _save(graph: onnx.GraphProto, path: Path, opset: int = 17) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _float_model(path: Path, weights: np.ndarray = _W) -> Path:
    """y = relu(x @ W + b), x: (batch, 4) with a dynamic batch axis."""
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(_B, "b")],
    )
    return _save(graph, path)


def _qdq_model(path: Path) -> Path:
    """The same net, explicitly quantized: Q/DQ on the activation, DQ on int8 weights."""
    w_scale = np.float32(np.abs(_W).max() / 127.0)
    w_q = np.clip(np.round(_W / w_scale), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(np.float32(1.0 / 64.0), "x_scale"),
        numpy_helper.from_array(np.int8(0), "x_zp"),
        numpy_helper.from_array(w_q, "W_q"),
        numpy_helper.from_array(w_scale, "w_scale"),
        numpy_helper.from_array(np.int8(0), "w_zp"),
        numpy_helper.from_array(_B, "b"),
    ]
    graph = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zp"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["W_q", "w_scale", "w_zp"], ["W"]),
            helper.make_node("MatMul", ["x_dq", "W"], ["xw"]),
            helper.make_node("Add", ["xw", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny_qdq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    return _save(graph, path)


def _qdq_in_subgraph(path: Path) -> Path:
    """QDQ only inside an If branch: the detector must look into subgraphs."""
    branch = helper.make_graph(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
            helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["out"]),
        ],
        "branch",
        [],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 4])],
    )
    plain = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["out2"])],
        "plain",
        [],
        [helper.make_tensor_value_info("out2", TensorProto.FLOAT, ["batch", 4])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=plain)],
        "nested",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        initializer=[
            numpy_helper.from_array(np.float32(0.1), "s"),
            numpy_helper.from_array(np.int8(0), "zp"),
        ],
    )
    return _save(graph, path)


@pytest.fixture
def float_model(tmp_path: Path) -> Path:
    return _float_model(tmp_path / "tiny.onnx")


@pytest.fixture
def qdq_model(tmp_path: Path) -> Path:
    return _qdq_model(tmp_path / "tiny_qdq.onnx")


# -- cache key --------------------------------------------------------------------------

_BASE_KEY = EngineKey(
    model_sha256="a" * 64,
    trt_version="10.3.0",
    gpu_name="Orin",
    compute_capability="8.7",
    precision="fp16",
    profile=BatchProfile(1, 1, 8),
    dla_core=None,
)


def test_cache_key_is_stable_for_equal_inputs() -> None:
    again = dataclasses.replace(_BASE_KEY)
    assert again.digest() == _BASE_KEY.digest()
    assert len(_BASE_KEY.digest()) == 64
    int(_BASE_KEY.digest(), 16)


@pytest.mark.parametrize(
    "change",
    [
        {"model_sha256": "b" * 64},
        {"trt_version": "10.3.1"},
        {"trt_version": "11.0.0"},
        {"gpu_name": "Xavier"},
        {"compute_capability": "7.2"},
        {"precision": "fp32"},
        {"precision": "int8"},
        {"profile": BatchProfile(1, 4, 8)},
        {"profile": BatchProfile(1, 1, 16)},
        {"dla_core": 0},
    ],
    ids=lambda c: next(iter(c)),
)
def test_cache_key_changes_with_each_component(change: dict[str, object]) -> None:
    changed = dataclasses.replace(_BASE_KEY, **change)  # type: ignore[arg-type]
    assert changed.digest() != _BASE_KEY.digest()
    cache = Path("/cache")
    assert changed.plan_path(cache, "m.onnx") != _BASE_KEY.plan_path(cache, "m.onnx")


def test_plan_path_is_under_cache_dir_and_readable(tmp_path: Path) -> None:
    path = _BASE_KEY.plan_path(tmp_path, "little.onnx")
    assert path.parent == tmp_path
    assert path.name.startswith("little.fp16.") and path.suffix == ".plan"
    described = _BASE_KEY.describe()
    assert described["digest"] == _BASE_KEY.digest()
    assert described["precision"] == "fp16"


def test_timing_cache_path_depends_on_trt_and_gpu(tmp_path: Path) -> None:
    base = timing_cache_path(tmp_path, "10.3.0", "Orin", "8.7")
    assert base == timing_cache_path(tmp_path, "10.3.0", "Orin", "8.7")
    assert base != timing_cache_path(tmp_path, "10.4.0", "Orin", "8.7")
    assert base != timing_cache_path(tmp_path, "10.3.0", "Xavier", "7.2")


def test_default_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "jetsplit" / "tensorrt"


def test_model_digest_tracks_the_model_bytes(tmp_path: Path) -> None:
    a = _float_model(tmp_path / "a.onnx")
    b = _float_model(tmp_path / "b.onnx")
    c = _float_model(tmp_path / "c.onnx", weights=_W + 1.0)
    assert model_digest(a) == model_digest(a)
    assert model_digest(a) == model_digest(b)  # a renamed copy is the same model
    assert model_digest(a) != model_digest(c)


def test_model_digest_requires_external_files(float_model: Path) -> None:
    with pytest.raises(EngineError, match="external data file"):
        model_digest(float_model, ["weights.bin"])


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "x.plan"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.plan"]


# -- options and precision ---------------------------------------------------------------


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_valid_precisions(precision: str) -> None:
    assert validate_precision(precision) == precision


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"precision": "bf16"}, "expected one of fp32, fp16, int8, got 'bf16'"),
        ({"precision": "FP16"}, "got 'FP16'"),
        ({"max_batch": 0}, "max: expected an integer >= 1"),
        ({"opt_batch": 9, "max_batch": 8}, "min <= opt <= max"),
        ({"opt_batch": 0}, "opt: expected an integer >= 1"),
        ({"workspace_mb": 0}, "workspace_mb"),
        ({"dla_core": -1}, "dla_core"),
        ({"dla_core": 0, "precision": "fp32"}, "DLA runs fp16 or int8"),
    ],
)
def test_bad_options_are_engine_errors(float_model: Path, options: dict[str, object], message: str) -> None:
    with pytest.raises(EngineError, match=_escaped(message)):
        TensorRTEngine(float_model, **options)  # type: ignore[arg-type]


def test_profile_shapes_cover_only_the_batch_axis() -> None:
    profile = BatchProfile(1, 4, 16)
    assert profile.shapes((-1, 3, 8, 8), "x") == ((1, 3, 8, 8), (4, 3, 8, 8), (16, 3, 8, 8))
    assert profile.shapes((2, 3, 8, 8), "x") is None
    with pytest.raises(EngineError, match="dynamic non-batch dimensions"):
        profile.shapes((-1, 3, -1, -1), "x")


# -- QDQ detection ---------------------------------------------------------------------------


def test_qdq_detector(tmp_path: Path, float_model: Path, qdq_model: Path) -> None:
    assert is_qdq_model(qdq_model) is True
    assert is_qdq_model(float_model) is False
    assert is_qdq_model(_qdq_in_subgraph(tmp_path / "nested.onnx")) is True


def test_model_facts(float_model: Path, qdq_model: Path) -> None:
    facts = inspect_model(float_model)
    assert (facts.has_qdq, facts.has_fp16, facts.external_data) == (False, False, ())
    assert inspect_model(qdq_model).has_qdq


def test_unreadable_model_is_an_engine_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a protobuf at all \xff\xfe")
    with pytest.raises(EngineError, match="not a readable ONNX model"):
        inspect_model(bad)


def test_int8_without_qdq_says_quantize_first(float_model: Path) -> None:
    # Checked before TensorRT is imported, so this holds on every host.
    with pytest.raises(EngineError, match="quantize it first") as info:
        TensorRTEngine(float_model, precision="int8").open()
    assert "TensorRT 11 removed implicit INT8 calibration" in str(info.value)


def test_qdq_model_needs_int8(qdq_model: Path) -> None:
    with pytest.raises(EngineError, match="open it with precision 'int8'"):
        TensorRTEngine(qdq_model, precision="fp16").open()


# -- missing libraries ---------------------------------------------------------------------


def test_missing_tensorrt_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, float_model: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import now fails here and on GPU hosts
    with pytest.raises(EngineError) as info:
        open_engine(float_model, backend="tensorrt", precision="fp32", cache_dir=float_model.parent)
    message = str(info.value)
    assert not isinstance(info.value, ImportError)
    assert "\n" not in message
    assert "'tensorrt' package is not importable" in message
    assert "JetPack's system python3" in message and "pip install jetsplit[jetson]" in message


def test_missing_cuda_python_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, float_model: Path) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(EngineError) as info:
        TensorRTEngine(float_model, precision="fp32").open()
    message = str(info.value)
    assert "\n" not in message
    assert "'cuda-python' package is not importable" in message
    assert "pip install jetsplit[jetson]" in message


# -- zero copy and CUDA errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "integrated", "can_map", "expected"),
    [
        (None, True, True, True),  # Jetson: zero-copy by default
        (None, False, True, False),  # discrete GPU: copies by default
        (None, True, False, False),
        (False, True, True, False),  # caller opts out
        (True, False, True, True),  # caller opts in on a discrete GPU
        (True, True, False, EngineError),
    ],
)
def test_use_mapped_memory(requested: bool | None, integrated: bool, can_map: bool, expected: object) -> None:
    if expected is EngineError:
        with pytest.raises(EngineError, match="cannot map host memory"):
            use_mapped_memory(requested, integrated, can_map)
    else:
        assert use_mapped_memory(requested, integrated, can_map) is expected


class _FakeError:
    def __init__(self, name: str) -> None:
        self.name = name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FakeError) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)


_FAKE_RT = types.SimpleNamespace(
    cudaError_t=types.SimpleNamespace(cudaSuccess=_FakeError("cudaSuccess")),
    cudaGetErrorName=lambda err: (_FakeError("cudaSuccess"), err.name.encode()),
)


def test_cuda_errors_name_the_call() -> None:
    cuda = Cuda(_FAKE_RT)
    ok = _FakeError("cudaSuccess")
    assert cuda("cudaMalloc", (ok, 1234)) == 1234
    assert cuda("cudaStreamSynchronize", (ok,)) is None
    assert cuda("cudaHostGetDevicePointer", (ok, 1, 2)) == (1, 2)
    with pytest.raises(EngineError, match="cudaHostAlloc failed: cudaErrorMemoryAllocation"):
        cuda("cudaHostAlloc", (_FakeError("cudaErrorMemoryAllocation"), 0))


# -- on a GPU ---------------------------------------------------------------------------------


def _gpu_or_skip() -> object:
    """Import TensorRT and find a CUDA device, or skip saying which is missing."""
    try:
        import tensorrt as trt
    except Exception as exc:
        pytest.skip(f"tensorrt not importable: {exc}")
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # type: ignore[no-redef]
        except Exception as exc:
            pytest.skip(f"cuda-python not importable: {exc}")
    err, count = cudart.cudaGetDeviceCount()
    if err != cudart.cudaError_t.cudaSuccess or count < 1:
        pytest.skip(f"no CUDA device: cudaGetDeviceCount -> {err}, {count}")
    return trt


def _reference(model: Path, x: np.ndarray) -> np.ndarray:
    with open_engine(model) as engine:
        return engine.infer({"x": x})["y"]


_X = np.linspace(-3.0, 3.0, 4 * 5, dtype=np.float32).reshape(5, 4)


@pytest.mark.gpu
@pytest.mark.parametrize(("precision", "tolerance"), [("fp32", 1e-5), ("fp16", 2e-2)])
def test_build_matches_onnxruntime(tmp_path: Path, float_model: Path, precision: str, tolerance: float) -> None:
    trt = _gpu_or_skip()
    if precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16"):  # type: ignore[attr-defined]
        with pytest.raises(EngineError, match="strongly typed"):
            TensorRTEngine(float_model, precision="fp16", cache_dir=tmp_path).open()
        return
    with TensorRTEngine(float_model, precision=precision, cache_dir=tmp_path, max_batch=8) as engine:
        assert [s.name for s in engine.inputs] == ["x"] and engine.inputs[0].shape == (None, 4)
        for batch in (1, 5):
            got = engine.infer({"x": _X[:batch]})["y"]
            np.testing.assert_allclose(got, _reference(float_model, _X[:batch]), rtol=tolerance, atol=tolerance)
        with pytest.raises(EngineError, match="outside the plan's profile"):
            engine.infer({"x": np.zeros((9, 4), np.float32)})


@pytest.mark.gpu
def test_second_open_loads_the_cached_plan(tmp_path: Path, float_model: Path) -> None:
    _gpu_or_skip()
    first = TensorRTEngine(float_model, precision="fp32", cache_dir=tmp_path)
    with first:
        expected = first.infer({"x": _X})["y"]
    assert first.cache_hit is False and first.build_seconds > 0.0
    assert first.plan_path is not None and first.plan_path.is_file()
    assert list(tmp_path.glob("timing.*.cache")), "timing cache not persisted"
    second = TensorRTEngine(float_model, precision="fp32", cache_dir=tmp_path)
    with second:
        np.testing.assert_array_equal(second.infer({"x": _X})["y"], expected)
    assert second.cache_hit is True and second.build_seconds == 0.0
    assert second.plan_path == first.plan_path
    # A different batch profile is a different plan, not a stale hit.
    third = TensorRTEngine(float_model, precision="fp32", cache_dir=tmp_path, max_batch=16)
    with third:
        assert third.cache_hit is False


@pytest.mark.gpu
def test_copy_and_zero_copy_paths_agree(tmp_path: Path, float_model: Path) -> None:
    _gpu_or_skip()
    results = []
    for mapped in (False, True):
        with TensorRTEngine(float_model, precision="fp32", cache_dir=tmp_path, mapped_memory=mapped) as engine:
            results.append(engine.infer({"x": _X})["y"])
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6, atol=1e-6)


@pytest.mark.gpu
def test_int8_from_qdq_matches_onnxruntime(tmp_path: Path, qdq_model: Path) -> None:
    _gpu_or_skip()
    with TensorRTEngine(qdq_model, precision="int8", cache_dir=tmp_path) as engine:
        got = engine.infer({"x": _X})["y"]
    # Both sides quantize x to steps of 1/64; accumulation order and the unquantized
    # layers' precision (FP16 allowed on TensorRT 10) differ, hence the tolerance.
    np.testing.assert_allclose(got, _reference(qdq_model, _X), rtol=5e-2, atol=5e-2)


def _escaped(text: str) -> str:
    import re

    return re.escape(text)
