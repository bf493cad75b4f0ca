"""Bring-up of an edge agent over two real workers, many times over (issue 11).

Starts two ``jetsplit cloud serve`` processes on loopback, then runs
``jetsplit edge run --bundle demo:little-big --offload frames --realtime --fps 100``
on a folder of digits ``--runs`` times, in three set-ups:

- ``two``: ``--cloud tcp://127.0.0.1:P1 --cloud tcp://127.0.0.1:P2``;
- ``dns``: ``--cloud tcp://workers.jetsplit.test:P``, a name that resolves to
  127.0.0.1 and 127.0.0.2 (both workers bind port P, one on each address). The name
  lives in a hosts file bind-mounted over /etc/hosts in a private mount namespace
  (``unshare -m``) around the edge process only: no system file is edited. Skipped
  where ``unshare`` cannot do that;
- ``restart``: ``two`` after one worker was killed and started again on its port.

For each run: whether any member was marked up and how long after joining, and
when the cloud first answered (see :func:`_run_edge`). The
results go to ``bench/results/bringup.json`` with the machine described::

    $ .venv/bin/python bench/bringup.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/support, shared with the tests
from tests.support.daemons import JETSPLIT, Daemon  # noqa: E402
from tests.support.frames import digits_folder  # noqa: E402
from tests.support.machine import describe  # noqa: E402

NAME = "workers.jetsplit.test"
FPS = 100


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(bind: str) -> Daemon:
    d = Daemon("cloud", "serve", "--bundle", "demo:little-big", "--bind", bind, "--threads", "1")
    d.wait_for("serving ")
    return d


def _can_unshare(hosts: Path) -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", f"mount --bind {hosts} /etc/hosts && getent ahosts {NAME}"],
        capture_output=True, text=True, timeout=30,
    )
    return probe.returncode == 0 and "127.0.0.2" in probe.stdout


def _run_edge(clouds: list[str], source: Path, prefix: list[str], timeout: float = 60.0) -> dict[str, Any]:
    """One edge run: when members came up, and when the cloud first answered.

    ``joined_to_up_ms``: from the pool's first ``joined`` line to its first ``up``
    line (as read here). ``first_cloud_s``: the capture time of the first frame the
    cloud answered, from the start of the source (frames are paced at 100 fps, so
    frame index / 100); ``before_first_cloud``: unsure frames that fell back before it.
    """
    args = [JETSPLIT, "edge", "run", "--bundle", "demo:little-big", "--offload", "frames", "--source", str(source),
            "--realtime", "--fps", str(FPS)]
    for c in clouds:
        args += ["--cloud", c]
    proc = subprocess.Popen([*prefix, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    joined: list[float] = []
    up: list[float] = []
    log: list[str] = []
    counts = {"cloud": 0, "fallback": 0, "edge": 0}
    first_cloud: int | None = None
    first_result: int | None = None
    before = 0

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line.rstrip("\n"))
            if " joined (from " in line and not joined:
                joined.append(time.monotonic())
            if line.rstrip().endswith(" up") and not up:
                up.append(time.monotonic())

    t = threading.Thread(target=read_err, daemon=True)
    t.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        r = json.loads(line)
        counts[r["where"]] = counts.get(r["where"], 0) + 1
        if first_result is None:
            first_result = int(r["frame"])
        if r["where"] == "cloud" and first_cloud is None:
            first_cloud = int(r["frame"])
        elif r["where"] == "fallback" and first_cloud is None:
            before += 1
    proc.wait(timeout)
    t.join(10)
    return {
        "rc": proc.returncode,
        "members_up": sum(1 for line in log if line.rstrip().endswith(" up")),
        "joined_to_up_ms": round((up[0] - joined[0]) * 1000.0, 1) if up and joined else None,
        "first_result_s": None if first_result is None else first_result / FPS,
        "first_cloud_s": None if first_cloud is None or first_result is None else (first_cloud - first_result) / FPS,
        "before_first_cloud": before,
        **counts,
        "warnings": [line for line in log if "WARNING" in line][:5],
    }


def _max(values: list[float | None]) -> float | None:
    """The largest, or None if any is None (a run without that event)."""
    return None if any(v is None for v in values) else max(v for v in values if v is not None)


def summarize(setups: dict[str, Any]) -> dict[str, Any]:
    """Per set-up: runs, runs with no member up, runs whose first unsure frame the
    cloud answered within a second, and the bring-up times."""
    out: dict[str, Any] = {}
    for name, rs in setups.items():
        if not isinstance(rs, list):
            continue
        ups = [r["joined_to_up_ms"] for r in rs]
        out[name] = {
            "runs": len(rs),
            "never_up": sum(1 for r in rs if r["members_up"] == 0),
            "offloaded_within_1s": sum(1 for r in rs if r["first_cloud_s"] is not None and r["first_cloud_s"] <= 1.0
                                       and r["before_first_cloud"] == 0),
            "first_cloud_s_max": _max([r["first_cloud_s"] for r in rs]),
            "joined_to_up_ms_median": statistics.median(u for u in ups if u is not None) if any(ups) else None,
            "joined_to_up_ms_max": _max(ups),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bringup.json")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="jetsplit-bringup-"))
    source = digits_folder(tmp / "frames", args.frames)
    hosts = tmp / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n127.0.0.1 {NAME}\n127.0.0.2 {NAME}\n")
    out: dict[str, Any] = {"machine": describe(), "runs": args.runs, "frames": args.frames, "setups": {}}
    p1, p2, p = _free_port(), _free_port(), _free_port()
    workers = [_worker(f"tcp://127.0.0.1:{p1}"), _worker(f"tcp://127.0.0.1:{p2}")]
    try:
        setups: dict[str, tuple[list[str], list[str]]] = {
            "two": ([f"tcp://127.0.0.1:{p1}", f"tcp://127.0.0.1:{p2}"], []),
        }
        for name, (clouds, prefix) in setups.items():
            out["setups"][name] = [_run_edge(clouds, source, prefix) for _ in range(args.runs)]
        # One worker restarts on its port; the edge comes up again over both.
        workers[0].proc.kill()
        workers[0].proc.wait(10)
        workers[0] = _worker(f"tcp://127.0.0.1:{p1}")
        out["setups"]["restart"] = [_run_edge(setups["two"][0], source, []) for _ in range(args.runs)]
        if _can_unshare(hosts):
            dns = [_worker(f"tcp://127.0.0.1:{p}"), _worker(f"tcp://127.0.0.2:{p}")]
            workers += dns
            prefix = ["unshare", "-m", "sh", "-c", f'mount --bind {hosts} /etc/hosts && exec "$@"', "sh"]
            out["setups"]["dns"] = [_run_edge([f"tcp://{NAME}:{p}"], source, prefix) for _ in range(args.runs)]
        else:
            out["setups"]["dns"] = "skipped: unshare -m with a bind-mounted /etc/hosts is not available here"
    finally:
        for w in workers:
            w.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    out["summary"] = summarize(out["setups"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out["summary"], indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    raise SystemExit(main())
