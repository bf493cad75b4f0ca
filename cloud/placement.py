"""Where the worker's threads run: engine threads on some CPUs, the socket thread on others.

A worker's engine should have its cores to itself: with the socket thread (receive,
decode, validate, reply) on the same core, every request's protocol work is taken
from the model, and the two threads take turns on one core and one GIL. Given
``engine_cpus`` the engine threads, and the ONNX Runtime thread pools their
sessions create, run only there; given ``io_cpus`` the socket thread and libzmq's
I/O thread run only there. On a GPU host the engine mostly waits on the device and
this matters less; on a CPU-only worker it is the difference between the model's
throughput and half of it (bench/worker_throughput.py).

CPU lists are written as ``taskset`` and systemd's ``CPUAffinity=`` write them:
``"1"``, ``"0,2"``, ``"4-7"``. Linux only (``os.sched_setaffinity``); elsewhere an
empty list is the only valid setting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from jetsplit.errors import ConfigError

__all__ = ["available_cpus", "parse_cpus", "pin_thread", "pinned"]


def available_cpus() -> frozenset[int]:
    """CPUs this process may run on."""
    if not hasattr(os, "sched_getaffinity"):
        return frozenset()
    return frozenset(os.sched_getaffinity(0))


def parse_cpus(text: str, what: str) -> tuple[int, ...]:
    """``"0,2-3"`` -> ``(0, 2, 3)``; ``""`` -> ``()``. Raises ConfigError naming ``what``."""
    cpus: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, sep, high = part.partition("-")
        try:
            first, last = int(low), int(high) if sep else int(low)
        except ValueError:
            raise ConfigError(f"{what}: expected a CPU list such as 1 or 0,2-3, got {text!r}") from None
        if first < 0 or last < first:
            raise ConfigError(f"{what}: expected a CPU list such as 1 or 0,2-3, got {text!r}")
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def check_cpus(cpus: tuple[int, ...], what: str) -> None:
    """ConfigError unless every CPU in ``cpus`` is one this process may use."""
    if not cpus:
        return
    usable = available_cpus()
    if not usable:
        raise ConfigError(f"{what}: CPU pinning needs Linux (os.sched_setaffinity); leave it empty here")
    missing = sorted(set(cpus) - usable)
    if missing:
        raise ConfigError(f"{what}: CPU(s) {missing} are not available to this process (usable: {sorted(usable)})")


def pin_thread(cpus: tuple[int, ...]) -> None:
    """Restrict the calling thread (not the process) to ``cpus``; no-op when empty.

    Threads the caller starts afterwards inherit the restriction, which is how
    ONNX Runtime's pools and libzmq's I/O thread are placed: create them after
    pinning the thread that creates them.
    """
    if cpus:
        os.sched_setaffinity(0, cpus)  # pid 0: the calling thread on Linux


@contextlib.contextmanager
def pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """Run the block pinned to ``cpus``, then restore the thread's previous CPUs."""
    if not cpus:
        yield
        return
    before = tuple(os.sched_getaffinity(0))
    pin_thread(cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
