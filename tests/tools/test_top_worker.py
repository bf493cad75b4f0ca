"""``jetsplit top http://...``: a worker's overload figures from its real metrics endpoint."""

from __future__ import annotations

import json
import socket

import pytest

from jetsplit.cloud.metrics import WorkerMetrics
from jetsplit.tools import top
from jetsplit.tools.top_worker import format_worker_window, scrape, worker_window


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def metrics() -> tuple[WorkerMetrics, str]:
    m = WorkerMetrics()
    port = _port()
    m.serve(port)
    m.queue_depth.labels(bundle="split", stage="1").set(12)
    m.queue_bytes.labels(bundle="split", stage="1").set(3 * 2**20)
    m.service_rate.labels(bundle="split", stage="1").set(4000)
    yield m, f"http://127.0.0.1:{port}/"
    m.close()


def test_window_rates_by_reason(metrics) -> None:
    m, url = metrics
    before = scrape(url)
    m.goodput.inc(200)
    m.requests.labels(status="ok").inc(210)
    m.shed.labels(status="overloaded", reason="deadline").inc(900)
    m.shed.labels(status="overloaded", reason="queue_full").inc(100)
    m.shed.labels(status="expired", reason="queue").inc(10)
    w = worker_window(url, before, scrape(url), 2.0)
    assert w.goodput == 100.0 and w.ok == 105.0
    assert w.refused == {"deadline": 450.0, "queue_full": 50.0} and w.expired == {"queue": 5.0}
    assert w.queues == {"split/1": {"requests": 12.0, "mib": 3.0, "rate": 4000.0}}
    text = format_worker_window(w)
    assert "OVERLOADED 500.0 /s (deadline 450.0, queue_full 50.0)" in text
    assert "queue split/1  12 requests, 3.0 MiB; serves 4000 /s" in text


def test_cli_once_json_and_mistakes(metrics, capsys) -> None:
    _, url = metrics
    assert top.main([url, "--once", "--interval", "0.1", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["queues"]["split/1"]["requests"] == 12.0
    from jetsplit.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot read the worker's metrics"):
        top.main([f"http://127.0.0.1:{_port()}/", "--once"])
