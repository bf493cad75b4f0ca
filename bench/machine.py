"""What a benchmark ran on: ``describe()`` and ``pin()`` from tests/support/machine.py
(shared with the soak test, which records a result too), importable here as
``from machine import describe`` by the scripts in this folder."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/support
from tests.support.machine import describe, pin  # noqa: E402

__all__ = ["describe", "pin"]
