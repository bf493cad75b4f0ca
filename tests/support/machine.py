"""What a benchmark ran on: the ``machine`` object every results file carries.

Used by the benchmarks (through bench/machine.py) and the soak test, and handy
alone::

    $ .venv/bin/python -m tests.support.machine
"""

from __future__ import annotations

import json
import os
import platform
from importlib import metadata
from typing import Any

__all__ = ["describe", "pin"]

_PACKAGES = ("numpy", "pyzmq", "onnxruntime", "grpcio", "msgspec")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict[str, Any]:
    """CPU model, core counts, OS, Python and the versions of the libraries measured."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "cpu": _cpu_model(),
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in _PACKAGES},
        # Other work on the machine skews any timing: say how busy it was.
        "loadavg_1_5_15": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def pin(core: int | None) -> bool:
    """Pin the calling process to ``core``: every thread it has now (numpy's BLAS
    threads exist from import on) and, by inheritance, every thread it starts
    later. False when pinning is not possible here (or ``core`` is None)."""
    if core is None or not hasattr(os, "sched_setaffinity"):
        return False
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    try:
        os.sched_setaffinity(0, {core})
    except OSError:
        return False
    for tid in tids:
        try:
            os.sched_setaffinity(tid, {core})
        except ProcessLookupError:
            pass  # a thread that ended meanwhile
    return True


if __name__ == "__main__":
    print(json.dumps(describe(), indent=2))
