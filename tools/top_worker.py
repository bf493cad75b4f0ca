"""``jetsplit top http://HOST:PORT/``: a live view of a cloud worker, from its
Prometheus metrics (``metrics_port`` in cloud.toml).

Every interval it scrapes the worker twice apart and shows, over that window:
goodput (answers ok before their deadline, per second), the requests refused
``OVERLOADED`` and answered ``EXPIRED`` per second by reason, and, as they are
now, each (bundle, stage) queue's depth and bytes and the service rate the worker
measured (what its admission control predicts with; cloud/admission.py).

    $ jetsplit top http://127.0.0.1:9100/ --once
    jetsplit top http://127.0.0.1:9100/  window 2.0 s
    goodput        4210.5 /s   (ok 4212.0 /s)
    refused        OVERLOADED 18020.5 /s (deadline 17990.0, queue_full 30.5)
    expired        12.0 /s (queue 11.5, engine 0.5)
    queue split/1  612 requests, 15.3 MiB; serves 4380 /s
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from typing import Any

from jetsplit.errors import ConfigError

__all__ = ["WorkerWindow", "format_worker_window", "scrape", "worker_window"]

#: A scrape: ``(metric name, sorted labels)`` -> value.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str, timeout_s: float = 5.0) -> Samples:
    """The worker's metrics at ``url`` (its ``/`` or ``/metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = urllib.request.urlopen(url, timeout=timeout_s).read().decode()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(f"{url}: cannot read the worker's metrics ({exc}); is metrics_port set on the worker?") from None
    out: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    except ValueError as exc:
        raise ConfigError(f"{url}: not Prometheus metrics ({exc})") from None
    if not any(name.startswith("jetsplit_") for name, _ in out):
        raise ConfigError(f"{url}: no jetsplit metrics there (is it a jetsplit cloud worker's metrics port?)")
    return out


@dataclass(frozen=True)
class WorkerWindow:
    """One window of a worker's figures (rates per second over ``seconds``)."""

    url: str
    seconds: float
    goodput: float
    ok: float
    refused: dict[str, float] = field(default_factory=dict)  # OVERLOADED by reason
    expired: dict[str, float] = field(default_factory=dict)  # EXPIRED by reason
    queues: dict[str, dict[str, float]] = field(default_factory=dict)  # "bundle/stage" -> depth, mib, rate
    in_flight: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _rate(a: Samples, b: Samples, name: str, labels: tuple[tuple[str, str], ...], seconds: float) -> float:
    return max(0.0, b.get((name, labels), 0.0) - a.get((name, labels), 0.0)) / seconds


def worker_window(url: str, before: Samples, after: Samples, seconds: float) -> WorkerWindow:
    """The figures between two scrapes ``seconds`` apart."""
    refused: dict[str, float] = {}
    expired: dict[str, float] = {}
    queues: dict[str, dict[str, float]] = {}
    for (name, labels), value in after.items():
        d = dict(labels)
        if name == "jetsplit_shed_total":
            into = refused if d.get("status") == "overloaded" else expired
            into[d.get("reason", "")] = _rate(before, after, name, labels, seconds)
        elif name in ("jetsplit_queue_depth", "jetsplit_queue_bytes", "jetsplit_service_rate"):
            q = queues.setdefault(f"{d.get('bundle')}/{d.get('stage')}", {})
            key = {"jetsplit_queue_depth": "requests", "jetsplit_queue_bytes": "mib", "jetsplit_service_rate": "rate"}[name]
            q[key] = value / 2**20 if key == "mib" else value
    return WorkerWindow(
        url=url, seconds=seconds,
        goodput=_rate(before, after, "jetsplit_goodput_total", (), seconds),
        ok=_rate(before, after, "jetsplit_requests_total", (("status", "ok"),), seconds),
        refused=refused, expired=expired, queues=queues,
        in_flight=after.get(("jetsplit_in_flight", ()), 0.0),
    )


def _by_reason(rates: dict[str, float]) -> str:
    total = sum(rates.values())
    parts = ", ".join(f"{k} {v:.1f}" for k, v in sorted(rates.items(), key=lambda kv: -kv[1]) if v > 0)
    return f"{total:.1f} /s" + (f" ({parts})" if parts else "")


def format_worker_window(w: WorkerWindow) -> str:
    lines = [
        f"jetsplit top {w.url}  window {w.seconds:.1f} s",
        f"goodput       {w.goodput:9.1f} /s   (ok {w.ok:.1f} /s)",
        f"refused       OVERLOADED {_by_reason(w.refused)}",
        f"expired       {_by_reason(w.expired)}",
    ]
    for key, q in sorted(w.queues.items()):
        rate = q.get("rate", 0.0)
        lines.append(f"queue {key:<8} {q.get('requests', 0.0):.0f} requests, {q.get('mib', 0.0):.1f} MiB; "
                     + (f"serves {rate:.0f} /s" if rate > 0 else "service rate not measured yet"))
    lines.append(f"in flight     {w.in_flight:.0f}")
    return "\n".join(lines)


def watch(url: str, interval: float) -> WorkerWindow:
    """Scrape, wait ``interval``, scrape again: one window."""
    t0, a = time.monotonic(), scrape(url)
    time.sleep(interval)
    b = scrape(url)
    return worker_window(url, a, b, time.monotonic() - t0)
