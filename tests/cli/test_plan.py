from __future__ import annotations

import json

import pytest

from jetsplit.cli import main
from jetsplit.errors import ConfigError
from jetsplit.tools.plan import plan


def test_arithmetic() -> None:
    p = plan(devices=200, fps=30, offload_rate=0.1, bytes_per_offload=25_000, worker_rps=3000, headroom=0.5)
    assert p.offloads_per_s == pytest.approx(600)
    assert p.workers == 1 and p.workers_with_spare == 2
    assert p.uplink_mbit_s_per_device == pytest.approx(3 * 25_000 * 8 / 1e6)
    assert plan(1000, 30, 0.2, 1000, 1000, 0.5).workers == 12  # 6000 / 500


@pytest.mark.parametrize(("kw", "message"), [
    ({"offload_rate": 1.5}, "offload_rate: expected a fraction"),
    ({"worker_rps": 0}, "worker_rps: expected a number > 0"),
    ({"headroom": 0}, "headroom: expected a fraction"),
])
def test_bad_input(kw: dict, message: str) -> None:
    args = {"devices": 10, "fps": 30, "offload_rate": 0.1, "bytes_per_offload": 100, "worker_rps": 100, **kw}
    with pytest.raises(ConfigError, match=message):
        plan(**args)


def test_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "--devices", "50", "--fps", "20", "--offload-rate", "0.05",
                 "--bytes-per-offload", "800", "--worker-rps", "1000", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["offloads_per_s"] == pytest.approx(50) and r["workers"] == 1
    assert main(["plan", "--devices", "50", "--fps", "20", "--worker-rps", "1000"]) == 2
