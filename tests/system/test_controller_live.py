"""The budget controller live on loopback: a real worker, a real edge process."""

from __future__ import annotations

import json
from pathlib import Path

from tests.support.daemons import Daemon, start_worker
from tests.support.frames import digits_folder
from tests.support.jsonl import read_jsonl


def test_max_offload_rate_held_live(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("split")  # its gate alone offloads ~60% of these digits
    src = digits_folder(tmp_path / "frames", 1800, "all")
    endpoint = f"ipc://{tmp_path}/worker.sock"
    out = tmp_path / "results.jsonl"
    worker, _ = start_worker(str(bundle.root), bind=endpoint)
    try:
        edge = Daemon("edge", "run", "--bundle", str(bundle.root), "--cloud", endpoint, "--source", str(src),
                      "--sink", f"jsonl:{out}", "--realtime", "--fps", "200", "--max-offload-rate", "0.2",
                      "--deadline-ms", "500")
        assert edge.proc.wait(90) == 0
    finally:
        worker.stop()
    results = sorted(read_jsonl(out), key=lambda r: r["frame"])
    settled = results[len(results) // 2:]  # after the controller's warm-up
    rate = sum(r["bytes_up"] > 0 for r in settled) / len(settled)
    assert 0.16 <= rate <= 0.24, f"offload rate {rate:.3f} against a budget of 0.2"
    # The controller did it by raising the bar, not by dropping frames.
    assert sum(r["where"] == "cloud" for r in settled) > 0.9 * sum(r["bytes_up"] > 0 for r in settled)
    summary = json.loads(edge.proc.stderr.read().strip().splitlines()[-1])["summary"] if edge.proc.stderr else {}
    assert summary["frames"] == len(results)
