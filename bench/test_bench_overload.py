"""``make bench``: run ``bench/overload.py`` briefly and check that it recorded its
JSON. Goodput is never asserted here: it is in the file, with the machine's load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jetsplit.demo import BUNDLES_DIR

SCRIPT = Path(__file__).resolve().parent / "overload.py"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_overload_benchmark_records_json(tmp_path: Path) -> None:
    if not (BUNDLES_DIR / "split").is_dir():
        pytest.skip("demo:split is not built (make bundles)")
    out = tmp_path / "overload.json"
    subprocess.run([sys.executable, str(SCRIPT), "--bundle", "demo:split", "--reps", "1", "--seconds", "1",
                    "--out", str(out)], check=True, timeout=840, cwd=SCRIPT.parent)
    record = json.loads(out.read_text())
    assert record["benchmark"] == "overload" and "loadavg_1_5_15" in record["machine"]
    (bundle,) = record["bundles"]
    assert [p["multiple"] for p in bundle["points"]] == [0.5, 1.0, 2.0, 5.0, 10.0]
    for point in bundle["points"]:
        for run in point["runs"]:
            assert run["unanswered"] == 0 and run["duplicates"] == 0
    assert bundle["flood"]["within_bound"] in (True, False)
