"""``make bench``: run ``bench/worker_throughput.py`` on ``demo:split`` and check
that it recorded its JSON. Throughput is never asserted: it is in the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jetsplit.demo import BUNDLES_DIR

SCRIPT = Path(__file__).resolve().parent / "worker_throughput.py"
RESULTS = Path(__file__).resolve().parent / "results" / "worker_throughput.json"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_worker_throughput_benchmark_records_json() -> None:
    if not (BUNDLES_DIR / "split").is_dir():
        pytest.skip("demo:split is not built (make bundles)")
    subprocess.run([sys.executable, str(SCRIPT), "--bundle", "demo:split", "--out", str(RESULTS)],
                   check=True, timeout=540)
    record = json.loads(RESULTS.read_text())
    assert record["benchmark"] == "worker_throughput"
    assert "machine" in record and "ratio" in record and "target_met" in record
