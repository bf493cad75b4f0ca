"""``make bench``: run the benchmark scripts that have no wrapper of their own and
check each recorded its JSON. Timings are never asserted: figures, ratios and
targets are in the files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SCRIPTS = ["edge_loop", "cascade", "calibration_seeds", "search_speed", "scaleout", "real_scale",
           "temperature"]  # soak: make soak


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmark_records_json(name: str) -> None:
    _run(name, 1100)


@pytest.mark.slow
@pytest.mark.timeout(3900)
def test_gates_oracle_records_json() -> None:
    # 10 data sets x 2 pairs x 6 gates, each bundle built and traced: ~15 min on
    # an idle 2-core machine, an hour on a busy one.
    _run("gates_oracle", 3600)


def _run(name: str, timeout: int) -> None:
    out = HERE / "results" / f"{name}.json"
    before = out.stat().st_mtime if out.exists() else 0.0
    subprocess.run([sys.executable, str(HERE / f"{name}.py")], check=True, timeout=timeout)
    assert out.stat().st_mtime > before
    record = json.loads(out.read_text())
    assert "machine" in record
