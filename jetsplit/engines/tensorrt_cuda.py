"""The CUDA side of the TensorRT backend: importing the bindings, the checked
runtime wrapper, and the I/O buffers (zero-copy mapped memory on Jetson).

Split from :mod:`jetsplit.engines.tensorrt`, which builds, caches and runs plans
on these buffers.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from jetsplit.errors import EngineError

__all__ = ["Buffer", "Cuda", "alloc_buffer", "device_name", "import_backends", "use_mapped_memory"]

_INSTALL_HINT = "on Jetson use JetPack's system python3, elsewhere `pip install jetsplit[jetson]`"


def import_backends() -> tuple[Any, Any]:
    """Import ``tensorrt`` and cuda-python's runtime module, or raise one clear EngineError."""
    try:
        import tensorrt as trt
    except (ImportError, OSError) as exc:  # OSError: bindings present, libnvinfer missing
        msg = f"tensorrt backend: the 'tensorrt' package is not importable ({exc}); {_INSTALL_HINT}"
        raise EngineError(msg) from None
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python layout, still on some JetPack images
        except (ImportError, OSError) as exc:
            raise EngineError(
                f"tensorrt backend: the 'cuda-python' package is not importable ({exc}); {_INSTALL_HINT}"
            ) from None
    return trt, cudart


def use_mapped_memory(requested: bool | None, integrated: bool, can_map: bool) -> bool:
    """Zero-copy only where the GPU shares DRAM with the CPU, unless the caller says otherwise.

    On a discrete GPU mapped memory would make every kernel read cross PCIe, so auto
    mode picks it only for an integrated GPU (every Jetson).
    """
    if requested is None:
        return integrated and can_map
    if requested and not can_map:
        raise EngineError("tensorrt mapped_memory=True: this GPU cannot map host memory (canMapHostMemory=0)")
    return requested


class Cuda:
    """Thin checked wrapper over cuda-python's runtime: every failure names its call."""

    def __init__(self, cudart: Any) -> None:
        self.rt = cudart

    def __call__(self, name: str, result: Any) -> Any:
        # cuda-python returns (err, *values); err is a cudaError_t enum.
        err, values = result[0], result[1:]
        if err != self.rt.cudaError_t.cudaSuccess:
            raise EngineError(f"tensorrt backend: {name} failed: {self.error_name(err)}")
        if not values:
            return None
        return values[0] if len(values) == 1 else values

    def error_name(self, err: Any) -> str:
        try:
            name = self.rt.cudaGetErrorName(err)[1]
        except Exception:  # naming the error must never hide it
            return str(err)
        return name.decode() if isinstance(name, bytes) else str(name)


@dataclass
class Buffer:
    """One I/O tensor's memory, sized for the largest batch of the profile."""

    name: str
    is_input: bool
    dtype: np.dtype
    capacity: int  # elements
    host_ptr: int
    device_ptr: int  # equals the mapped alias of host_ptr in zero-copy mode
    mapped: bool
    host: np.ndarray  # flat view over host_ptr


def alloc_buffer(cuda: Cuda, name: str, is_input: bool, dtype: np.dtype, count: int, mapped: bool,
                 unified: bool) -> Buffer:
    """Memory for one I/O tensor: mapped pinned host memory (zero-copy, the GPU reads
    it in place) or pinned staging plus device memory."""
    rt = cuda.rt
    nbytes = count * dtype.itemsize
    if mapped:
        host_ptr = int(cuda("cudaHostAlloc", rt.cudaHostAlloc(nbytes, rt.cudaHostAllocMapped)))
        err, dev = rt.cudaHostGetDevicePointer(host_ptr, 0)
        if err == rt.cudaError_t.cudaSuccess:
            device_ptr = int(dev)
        elif unified:
            device_ptr = host_ptr  # UVA: pinned host memory has the same address on the device
        else:
            rt.cudaFreeHost(host_ptr)
            raise EngineError(f"tensorrt backend: cudaHostGetDevicePointer failed: {cuda.error_name(err)}")
    else:
        host_ptr = int(cuda("cudaMallocHost", rt.cudaMallocHost(nbytes)))
        try:
            device_ptr = int(cuda("cudaMalloc", rt.cudaMalloc(nbytes)))
        except EngineError:
            rt.cudaFreeHost(host_ptr)
            raise
    raw = (ctypes.c_ubyte * nbytes).from_address(host_ptr)
    host = np.frombuffer(memoryview(raw), dtype=np.uint8).view(dtype)
    return Buffer(name, is_input, dtype, count, host_ptr, device_ptr, mapped, host)


def device_name(value: Any) -> str:
    """cudaDeviceProp.name arrives as bytes (a C char array) in cuda-python."""
    if isinstance(value, bytes):
        return value.split(b"\0", 1)[0].decode(errors="replace")
    return str(value)
