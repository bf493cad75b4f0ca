"""How long ``jetsplit tune`` takes on 10,000 samples x 4 stages (issue 5: < 10 s).

Synthetic traces (random scores, correctness that rises with the score, random
costs) are tuned through the real command, end to end: load the trace and the
bundle, search every threshold set with every cost, write the bundle and the
summary. Recorded in ``bench/results/search_speed.json``.

    $ .venv/bin/python bench/search_speed.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/support
from tests.support.machine import describe  # noqa: E402
from tests.support.traces import synthetic_trace, synthetic_tune_inputs  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "search_speed.json"


def run(n: int = 10_000, stages: int = 4) -> dict[str, Any]:
    from jetsplit.calibration.search import search_thresholds
    from jetsplit.tools.tune import main as tune_main

    trace = synthetic_trace(n, stages)
    started = time.perf_counter()
    result = search_thresholds(trace, cost="time", objective="seed", alpha=0.5,
                               extra_costs=("energy", "bytes", "offload"))
    search_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        calib, test = synthetic_tune_inputs(root, n, stages)
        started = time.perf_counter()
        code = tune_main([str(calib), "--test", str(test), "--out", str(root / "tuned"),
                          "--objective", "seed", "--alpha", "0.5"])
        tune_s = time.perf_counter() - started
    return {"samples": n, "stages": stages, "threshold_sets": result.evaluated,
            "search_seconds": round(search_s, 3), "tune_command_seconds": round(tune_s, 3),
            "tune_exit_code": code, "limit_seconds": 10, "machine": describe()}


def main() -> int:
    record = run()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))
    return 0 if record["tune_command_seconds"] < record["limit_seconds"] else 1


if __name__ == "__main__":
    sys.exit(main())
