"""Prometheus metrics of the cloud worker, on a registry of its own (so several
workers in one test process do not collide), served over HTTP when a port is set."""

from __future__ import annotations

import errno
from typing import Any

from jetsplit.errors import ConfigError

__all__ = ["WorkerMetrics"]


class WorkerMetrics:
    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("jetsplit_requests", "Requests answered, by status code",
                                ["status"], registry=self.registry)
        self.batch_size = Histogram("jetsplit_batch_size", "Requests per engine batch",
                                    buckets=(1, 2, 4, 8, 16, 32, 64, 128), registry=self.registry)
        self.queue_seconds = Histogram("jetsplit_queue_seconds", "Time a request waited for its batch",
                                       buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
                                       registry=self.registry)
        self.compute_seconds = Histogram("jetsplit_compute_seconds", "Engine time per batch",
                                         buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5),
                                         registry=self.registry)
        self.in_flight = Gauge("jetsplit_in_flight", "Requests accepted and not yet answered",
                               registry=self.registry)
        # Overload (cloud/admission.py): what was refused or dropped, and why.
        self.shed = Counter("jetsplit_shed", "Requests answered without running: OVERLOADED (refused on "
                            "arrival) or EXPIRED, by reason", ["status", "reason"], registry=self.registry)
        self.goodput = Counter("jetsplit_goodput", "Requests answered ok before their deadline",
                               registry=self.registry)
        self.queue_depth = Gauge("jetsplit_queue_depth", "Requests waiting for a batch",
                                 ["bundle", "stage"], registry=self.registry)
        self.queue_bytes = Gauge("jetsplit_queue_bytes", "Bytes held by the requests waiting for a batch",
                                 ["bundle", "stage"], registry=self.registry)
        self.service_rate = Gauge("jetsplit_service_rate", "Measured requests per second the engines serve "
                                  "when busy (0 until measured)", ["bundle", "stage"], registry=self.registry)
        self._server: Any = None

    def serve(self, port: int, addr: str = "127.0.0.1") -> None:
        from prometheus_client import start_http_server

        try:
            self._server = start_http_server(port, addr=addr, registry=self.registry)
        except OSError as exc:
            why = ("address already in use (another process listens there: choose another --metrics-port, "
                   "metrics_port in cloud.toml or JETSPLIT_CLOUD_METRICS_PORT)"
                   if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc))
            raise ConfigError(f"metrics: cannot listen on {addr}:{port}: {why}") from None

    def close(self) -> None:
        if self._server is not None:
            server = self._server[0] if isinstance(self._server, tuple) else self._server
            server.shutdown()
            self._server = None

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        out: bytes = generate_latest(self.registry)
        return out
