"""The board's power mode and clocks, as jetson-stats' ``jtop`` reports them.

Energy figures mean little without the mode they were measured in: the same
frame costs different joules at 7 W and at MAXN. jtop (>= 4.2) gives
``jetson.nvpmodel`` (its ``name`` and ``id``), ``jetson.jetson_clocks`` (true
when the clocks are pinned at the mode's maximum), ``jetson.cpu["cpu"][i]["freq"]``
and ``jetson.gpu[name]["freq"]`` (``cur``/``min``/``max`` in kHz). Only what the
board reports is kept; a missing or malformed part is left out, never guessed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["describe_board", "jtop_board_state"]


def _mhz(freq: Any) -> float | None:
    if isinstance(freq, dict) and isinstance(freq.get("cur"), (int, float)):
        return round(float(freq["cur"]) / 1000.0, 1)
    return None


def jtop_board_state(jetson: Any) -> dict[str, Any]:
    """``{"nvpmodel": "15W", "nvpmodel_id": 0, "jetson_clocks": False,
    "cpu_mhz": [...], "gpu_mhz": {...}}`` from a started ``jtop`` object."""
    state: dict[str, Any] = {}
    try:
        mode = jetson.nvpmodel
    except Exception:  # jtop raises when the board has no nvpmodel
        mode = None
    if mode is not None:
        state["nvpmodel"] = str(getattr(mode, "name", mode))
        if isinstance(getattr(mode, "id", None), int):
            state["nvpmodel_id"] = mode.id
    try:
        clocks = jetson.jetson_clocks
    except Exception:
        clocks = None
    if clocks is not None:
        state["jetson_clocks"] = bool(clocks)
    cpus = (getattr(jetson, "cpu", None) or {}).get("cpu", [])
    cpu_mhz = [_mhz(c.get("freq")) for c in cpus if isinstance(c, dict) and c.get("online", True)]
    if cpu_mhz and all(f is not None for f in cpu_mhz):
        state["cpu_mhz"] = cpu_mhz
    gpus = getattr(jetson, "gpu", None) or {}
    gpu_mhz = {name: _mhz(g.get("freq")) for name, g in gpus.items() if isinstance(g, dict)}
    if gpu_mhz and all(f is not None for f in gpu_mhz.values()):
        state["gpu_mhz"] = gpu_mhz
    return state


def describe_board(state: dict[str, Any]) -> str:
    """One line: ``nvpmodel 15W (id 0), jetson_clocks off, CPU 1510.4 MHz, GPU ga10b 624.8 MHz``."""
    parts = []
    if "nvpmodel" in state:
        ident = f" (id {state['nvpmodel_id']})" if "nvpmodel_id" in state else ""
        parts.append(f"nvpmodel {state['nvpmodel']}{ident}")
    if "jetson_clocks" in state:
        parts.append(f"jetson_clocks {'on' if state['jetson_clocks'] else 'off'}")
    if "cpu_mhz" in state:
        cpu = state["cpu_mhz"]
        parts.append(f"CPU {min(cpu):g}-{max(cpu):g} MHz" if min(cpu) != max(cpu) else f"CPU {cpu[0]:g} MHz")
    for name, mhz in state.get("gpu_mhz", {}).items():
        parts.append(f"GPU {name} {mhz:g} MHz")
    return ", ".join(parts) or "power mode and clocks unknown (jtop gives them)"
