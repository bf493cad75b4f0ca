"""JSON-lines results (the agent's ``jsonl:`` sink), read while another process writes them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

__all__ = ["read_jsonl", "wait_lines"]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line of ``path`` as a dict ([] while it does not exist)."""
    if not path.exists():
        return []
    # Another process is writing: only lines it has finished (newline-terminated).
    complete = path.read_text().split("\n")[:-1]
    return [json.loads(line) for line in complete if line.strip()]


def wait_lines(path: Path, n: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Wait until ``path`` holds at least ``n`` results; return them."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        rows = read_jsonl(path)
        if len(rows) >= n:
            return rows
        time.sleep(0.02)  # polling a file another process writes: no event to wait on
    raise TimeoutError(f"{path} has fewer than {n} results after {timeout} s")
