"""Widening float16 hand-off batches: exact, whichever way it is done."""

from __future__ import annotations

import numpy as np
import pytest

from jetsplit import halfcast


def _halves(n: int) -> np.ndarray:
    """Every kind of float16: normals, subnormals, zeros of both signs, infinities, NaN."""
    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2**16, n, dtype=np.uint16)
    bits[:8] = [0x0000, 0x8000, 0x0001, 0x03FF, 0x7C00, 0xFC00, 0x7E00, 0x7BFF]
    return bits.view(np.float16)


@pytest.mark.parametrize("n", [10, halfcast.MIN_ELEMENTS, 200_000])
def test_to_float32_is_exact(n: int) -> None:
    x = _halves(n).reshape(-1, 5) if n % 5 == 0 else _halves(n)
    out = halfcast.to_float32(x)
    want = x.astype(np.float32)
    assert out.dtype == np.float32 and out.shape == x.shape
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(out), nan)
    # Bit for bit elsewhere (signed zeros, subnormals, infinities); NaN payloads may
    # come back quieted by the CPU's conversion instruction, still NaN.
    np.testing.assert_array_equal(out[~nan].view(np.uint32), want[~nan].view(np.uint32))


def test_to_float32_passes_float32_and_widens_others() -> None:
    f = np.ones((3, 4), np.float32)
    assert halfcast.to_float32(f) is f
    np.testing.assert_array_equal(halfcast.to_float32(np.arange(6, dtype=np.int16)), np.arange(6, dtype=np.float32))
    strided = _halves(2 * halfcast.MIN_ELEMENTS)[::2]  # non-contiguous input
    np.testing.assert_array_equal(halfcast.to_float32(strided), strided.astype(np.float32))
