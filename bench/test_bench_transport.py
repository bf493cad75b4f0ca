"""``make bench``: run ``bench/transport.py`` and check that it recorded its JSON.

Timings are never asserted: the figures, ratios and targets are in the file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent / "transport.py"
RESULTS = Path(__file__).resolve().parent / "results" / "transport.json"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_transport_benchmark_records_json() -> None:
    subprocess.run([sys.executable, str(SCRIPT), "--out", str(RESULTS)], check=True, timeout=540)
    record = json.loads(RESULTS.read_text())
    assert record["benchmark"] == "transport"
    assert "machine" in record and "medians_ms" in record and "targets" in record
