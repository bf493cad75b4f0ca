"""Native TensorRT backend for Jetson: build from ONNX, cache the plan, run it.

Build: ``trt.OnnxParser`` fills a network; one optimization profile covers batch
sizes ``1 .. max_batch`` (tuned for ``opt_batch``). Precision follows the TensorRT
version. TensorRT 10 (JetPack 6) is weakly typed: ``fp16`` sets the FP16 builder
flag, ``int8`` sets INT8 (+FP16 for the unquantized layers). TensorRT 11 removed
those flags and builds strongly typed networks only, so there the tensor types in
the ONNX file *are* the precision. INT8 always comes from an explicitly quantized
(QDQ) model: TensorRT 10 deprecated and TensorRT 11 removed implicit calibration.

Cache: plans live under ``cache_dir`` keyed by the model's SHA-256, the TensorRT
version, the GPU and its compute capability, the precision and the batch profile
(see ``tensorrt_cache``); the tactic timing cache lives beside them.

Run: the tensor-address API (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) on buffers from cuda-python. On an integrated GPU (Jetson)
the buffers are mapped pinned host memory, so the GPU reads the frame where the CPU
wrote it and no copy is made; on a discrete GPU, pinned staging plus device memory.

    >>> from jetsplit.engines import open_engine
    >>> with open_engine("little.onnx", backend="tensorrt", precision="fp16") as eng:  # doctest: +SKIP
    ...     scores = eng.infer({"input": batch})["logits"]
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.engines.base import Engine, TensorSpec
from jetsplit.engines.tensorrt_cache import (
    BatchProfile,
    EngineKey,
    ModelFacts,
    atomic_write,
    default_cache_dir,
    inspect_model,
    model_digest,
    timing_cache_path,
    validate_precision,
)
from jetsplit.engines.tensorrt_cuda import (
    Buffer,
    Cuda,
    alloc_buffer,
    device_name,
    import_backends,
    use_mapped_memory,
)
from jetsplit.errors import EngineError

__all__ = ["TensorRTEngine", "import_backends", "use_mapped_memory"]

_log = logging.getLogger(__name__)

class TensorRTEngine(Engine):
    """A TensorRT plan built (or loaded from cache) from an ONNX file.

    ``cache_hit`` tells whether ``open()`` loaded a cached plan; ``build_seconds`` is
    how long a build took (0.0 on a cache hit).
    """

    backend = "tensorrt"

    def __init__(
        self,
        model: str | Path,
        precision: str = "fp16",
        cache_dir: str | Path | None = None,
        workspace_mb: int = 1024,
        max_batch: int = 8,
        opt_batch: int = 1,
        dla_core: int | None = None,
        mapped_memory: bool | None = None,
    ) -> None:
        super().__init__(model)
        # Validate here, not in _open: a bad option is the caller's bug on any host.
        self.precision = validate_precision(precision)
        self.profile = BatchProfile(1, opt_batch, max_batch)
        if not isinstance(workspace_mb, int) or isinstance(workspace_mb, bool) or workspace_mb < 1:
            raise EngineError(f"tensorrt workspace_mb: expected an integer >= 1, got {workspace_mb!r}")
        if dla_core is not None and (not isinstance(dla_core, int) or dla_core < 0):
            raise EngineError(f"tensorrt dla_core: expected None or an integer >= 0, got {dla_core!r}")
        if dla_core is not None and precision == "fp32":
            raise EngineError("tensorrt dla_core: DLA runs fp16 or int8 only, got precision 'fp32'")
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.workspace_mb = workspace_mb
        self.dla_core = dla_core
        self.mapped_memory = mapped_memory
        self.cache_hit = False
        self.build_seconds = 0.0
        self.plan_path: Path | None = None
        self._lock = threading.Lock()  # one execution context: one inference at a time
        self._cuda: Cuda | None = None
        self._runtime: Any = None
        self._engine: Any = None
        self._context: Any = None
        self._stream: Any = None
        self._buffers: list[Buffer] = []
        self._batch_inputs: set[str] = set()

    # -- open --------------------------------------------------------------------
    def _open(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        try:
            return self._open_unchecked()
        except BaseException:
            # Base.open() only closes what opened; free what a failed open allocated.
            try:
                self._close()
            except EngineError as exc:
                _log.warning("%s", exc)
            raise

    def _open_unchecked(self) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        facts = inspect_model(self.model)
        self._check_precision(facts)  # before importing TensorRT: a model error is one everywhere
        trt, cudart = import_backends()
        self._cuda = cuda = Cuda(cudart)
        self._check_strong_typing(trt, facts)

        device = cuda("cudaGetDevice", cudart.cudaGetDevice())
        prop = cuda("cudaGetDeviceProperties", cudart.cudaGetDeviceProperties(device))
        gpu_name = device_name(prop.name)
        mapped = use_mapped_memory(self.mapped_memory, bool(prop.integrated), bool(prop.canMapHostMemory))
        if mapped:
            # Must precede context creation; TensorRT creates it on first use. When a
            # context already exists the flag cannot change, and on 64-bit UVA systems
            # pinned allocations are mapped anyway, so that one error is not fatal.
            err = cudart.cudaSetDeviceFlags(cudart.cudaDeviceMapHost)[0]
            if err not in (cudart.cudaError_t.cudaSuccess, cudart.cudaError_t.cudaErrorSetOnActiveProcess):
                raise EngineError(f"tensorrt backend: cudaSetDeviceFlags failed: {cuda.error_name(err)}")
            cudart.cudaGetLastError()  # clear the tolerated error so no later check inherits it

        key = EngineKey(
            model_sha256=model_digest(self.model, facts.external_data),
            trt_version=str(trt.__version__),
            gpu_name=gpu_name,
            compute_capability=f"{prop.major}.{prop.minor}",
            precision=self.precision,
            profile=self.profile,
            dla_core=self.dla_core,
        )
        self.plan_path = key.plan_path(self.cache_dir, self.model.name)
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        if self.dla_core is not None:
            self._runtime.DLA_core = self.dla_core  # a DLA plan must be loaded onto its core
        self._engine = self._load_plan(self.plan_path)
        if self._engine is None:
            timing = timing_cache_path(self.cache_dir, key.trt_version, key.gpu_name, key.compute_capability)
            start = time.perf_counter()
            plan = self._build_plan(trt, logger, timing)
            self.build_seconds = time.perf_counter() - start
            atomic_write(self.plan_path, plan)
            described = json.dumps(key.describe(), indent=2, sort_keys=True) + "\n"
            atomic_write(self.plan_path.with_suffix(".json"), described.encode())
            self._engine = self._runtime.deserialize_cuda_engine(plan)
            if self._engine is None:
                raise EngineError(f"{self.model.name}: TensorRT built a plan it cannot load (see its log)")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise EngineError(f"{self.model.name}: TensorRT could not create an execution context (out of GPU memory?)")
        self._stream = cuda("cudaStreamCreate", cudart.cudaStreamCreate())
        return self._allocate(trt, mapped, bool(prop.unifiedAddressing))

    def _check_precision(self, facts: ModelFacts) -> None:
        name = self.model.name
        if self.precision == "int8" and not facts.has_qdq:
            raise EngineError(
                f"{name}: precision 'int8' needs an explicitly quantized (QDQ) ONNX model and this one has no "
                "QuantizeLinear/DequantizeLinear nodes; quantize it first (QDQ format) — TensorRT 10 deprecated "
                "and TensorRT 11 removed implicit INT8 calibration"
            )
        if facts.has_qdq and self.precision != "int8":
            raise EngineError(f"{name}: the model is explicitly quantized (QDQ); open it with precision 'int8'")

    def _check_strong_typing(self, trt: Any, facts: ModelFacts) -> None:
        # TensorRT 11 dropped BuilderFlag.FP16: networks are strongly typed, so an
        # FP32 model builds FP32 whatever we ask. Say so rather than run slower silently.
        if self.precision == "fp16" and not hasattr(trt.BuilderFlag, "FP16") and not facts.has_fp16:
            raise EngineError(
                f"{self.model.name}: TensorRT {trt.__version__} builds strongly typed networks only and this model "
                "has no FP16 tensors; convert it with ModelOpt AutoCast "
                "(python -m modelopt.onnx.autocast --onnx_path MODEL) or open it with precision 'fp32'"
            )

    def _load_plan(self, path: Path) -> Any:
        if not path.is_file():
            return None
        engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            # Truncated by a crash, or from a TensorRT the key did not tell apart: rebuild.
            _log.warning("%s: cached TensorRT plan %s does not load; rebuilding", self.model.name, path)
            return None
        self.cache_hit = True
        return engine

    def _build_plan(self, trt: Any, logger: Any, timing_path: Path) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
        parser = trt.OnnxParser(network, logger)
        # parse_from_file, not parse(bytes): it resolves external weight files next to the model.
        if not parser.parse_from_file(str(self.model)):
            errors = "; ".join(str(parser.get_error(i)).strip() for i in range(parser.num_errors))
            raise EngineError(f"{self.model.name}: TensorRT's ONNX parser rejects it: {errors or 'no detail'}")

        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_mb << 20)
        self._set_precision_flags(trt, config)
        if self.dla_core is not None:
            if self.dla_core >= builder.num_DLA_cores:
                cores = builder.num_DLA_cores
                raise EngineError(f"tensorrt dla_core {self.dla_core}: this device has {cores} DLA cores")
            config.default_device_type = trt.DeviceType.DLA
            config.DLA_core = self.dla_core
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)  # layers DLA cannot run go to the GPU

        profile = builder.create_optimization_profile()
        dynamic = False
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            shapes = self.profile.shapes(tuple(tensor.shape), tensor.name)
            if shapes is not None:
                profile.set_shape(tensor.name, *shapes)
                dynamic = True
        if dynamic:
            config.add_optimization_profile(profile)

        cache_bytes = timing_path.read_bytes() if timing_path.is_file() else b""
        # ignore_mismatch=True: a timing cache from another device is dropped, not fatal.
        config.set_timing_cache(config.create_timing_cache(cache_bytes), True)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineError(f"{self.model.name}: TensorRT could not build a {self.precision} plan (see its log)")
        atomic_write(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
        return bytes(memoryview(plan))

    def _set_precision_flags(self, trt: Any, config: Any) -> None:
        flags = trt.BuilderFlag
        if not hasattr(flags, "FP16"):
            return  # TensorRT 11: strongly typed, the model's tensor types decide
        if self.precision == "fp32" and hasattr(flags, "TF32"):
            config.clear_flag(flags.TF32)  # fp32 means fp32: TF32 matmuls would lose ~3 digits
        if self.precision in ("fp16", "int8"):
            config.set_flag(flags.FP16)
        if self.precision == "int8":
            config.set_flag(flags.INT8)  # with Q/DQ nodes: explicit quantization, no calibrator

    # -- buffers -------------------------------------------------------------------
    def _allocate(self, trt: Any, mapped: bool, unified: bool) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
        engine, context = self._engine, self._context
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        # Set every input to its largest shape so the outputs report their largest too.
        for name in names:
            if engine.get_tensor_mode(name) != trt.TensorIOMode.INPUT:
                continue
            shape = tuple(engine.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                self._batch_inputs.add(name)
                shape = tuple(engine.get_tensor_profile_shape(name, 0)[2])
            if not context.set_input_shape(name, shape):
                raise EngineError(f"{self.model.name}: TensorRT refuses input {name!r} at shape {shape}")
        for name in names:
            is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            try:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            except TypeError:
                kind = engine.get_tensor_dtype(name)
                raise EngineError(f"{self.model.name}: tensor {name!r} has type {kind}, which numpy cannot hold") from None
            spec_shape = tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(name))
            largest = tuple(context.get_tensor_shape(name))
            if any(d < 0 for d in largest):
                raise EngineError(f"{self.model.name}: output {name!r} has a data-dependent shape (unsupported here)")
            buf = alloc_buffer(self._require_cuda(), name, is_input, dtype, max(1, math.prod(largest)), mapped, unified)
            self._buffers.append(buf)
            if not context.set_tensor_address(name, buf.device_ptr):
                raise EngineError(f"{self.model.name}: TensorRT refuses the address for tensor {name!r}")
            (inputs if is_input else outputs).append(TensorSpec(name, dtype, spec_shape))
        return tuple(inputs), tuple(outputs)

    # -- inference -----------------------------------------------------------------
    def _infer(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cuda = self._require_cuda()
        rt = cuda.rt
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        with self._lock:
            context = self._context
            for buf in self._buffers:
                if not buf.is_input:
                    continue
                array = np.ascontiguousarray(feeds[buf.name])
                if buf.name in self._batch_inputs and not 1 <= array.shape[0] <= self.profile.max:
                    raise EngineError(
                        f"{self.model.name}: input {buf.name!r} batch {array.shape[0]} is outside the plan's "
                        f"profile 1..{self.profile.max} (open with a larger max_batch)"
                    )
                if tuple(context.get_tensor_shape(buf.name)) != array.shape:
                    if not context.set_input_shape(buf.name, array.shape):
                        raise EngineError(f"{self.model.name}: TensorRT refuses {buf.name!r} at shape {array.shape}")
                buf.host[: array.size] = array.reshape(-1)
                if not buf.mapped:
                    copy = rt.cudaMemcpyAsync(buf.device_ptr, buf.host_ptr, array.nbytes, h2d, self._stream)
                    cuda("cudaMemcpyAsync", copy)
            if not context.execute_async_v3(int(self._stream)):
                raise EngineError(f"{self.model.name}: TensorRT execute_async_v3 failed (see its log)")
            shapes: dict[str, tuple[int, ...]] = {}
            for buf in self._buffers:
                if buf.is_input:
                    continue
                shapes[buf.name] = shape = tuple(int(d) for d in context.get_tensor_shape(buf.name))
                if not buf.mapped:
                    nbytes = math.prod(shape) * buf.dtype.itemsize
                    cuda("cudaMemcpyAsync", rt.cudaMemcpyAsync(buf.host_ptr, buf.device_ptr, nbytes, d2h, self._stream))
            cuda("cudaStreamSynchronize", rt.cudaStreamSynchronize(self._stream))
            # Copy out: the buffers are reused by the next call.
            return {
                buf.name: buf.host[: math.prod(shapes[buf.name])].reshape(shapes[buf.name]).copy()
                for buf in self._buffers
                if not buf.is_input
            }

    # -- close ---------------------------------------------------------------------
    def _close(self) -> None:
        # The context and engine go first: they may still reference the buffers.
        self._context = None
        self._engine = None
        self._runtime = None
        cuda, self._cuda = self._cuda, None
        buffers, self._buffers = self._buffers, []
        self._batch_inputs = set()
        if cuda is None:
            return
        rt = cuda.rt
        errors = []
        if self._stream is not None:
            errors.append(("cudaStreamDestroy", rt.cudaStreamDestroy(self._stream)[0]))
            self._stream = None
        for buf in buffers:
            errors.append(("cudaFreeHost", rt.cudaFreeHost(buf.host_ptr)[0]))
            if not buf.mapped:
                errors.append(("cudaFree", rt.cudaFree(buf.device_ptr)[0]))
        failed = [f"{call}: {cuda.error_name(err)}" for call, err in errors if err != rt.cudaError_t.cudaSuccess]
        if failed:
            raise EngineError(f"tensorrt backend: releasing {self.model.name} failed: {'; '.join(failed)}")

    def _require_cuda(self) -> Cuda:
        if self._cuda is None:
            raise EngineError(f"{self.model.name}: tensorrt engine is not open")
        return self._cuda
