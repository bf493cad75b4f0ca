"""The cloud worker: a ZeroMQ ROUTER serving many edges.

Threads and their roles:

- the socket thread (the caller of :meth:`Worker.serve`) owns the socket: it
  receives, validates (fingerprint, stage, tensors) and queues requests in the
  batcher, answers what is wrong at once, sends the replies engine threads post,
  and pings the systemd watchdog;
- ``threads`` engine threads take batches per (bundle, stage), run the chain from
  that stage to the end (ONNX Runtime and TensorRT release the GIL), and post one
  reply per request. With ``threads = 0`` the socket thread runs the batches
  itself between receives: no hand-off between threads, which is what a worker
  pinned to one core wants (the threads would only take turns on it).

A malformed or hostile request costs an error reply and nothing else: the decoder
enforces every limit before allocating, and any exception in a batch is answered
per request. On stop (SIGTERM), the socket thread stops accepting work (new requests
are answered ``shutting down``), waits for everything it accepted to be answered,
then closes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from jetsplit.bundle import Bundle, load_bundle
from jetsplit.chain import Chain
from jetsplit.cloud.batcher import Batch, Batcher
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.metrics import WorkerMetrics
from jetsplit.errors import ConfigError, JetsplitError
from jetsplit.handoff import stack, validate
from jetsplit.protocol import CurveServer, Server, StatusCode
from jetsplit.protocol.codec import error_for, result_for
from jetsplit.protocol.messages import InferRequest
from jetsplit.protocol.transport import Request
from jetsplit.systemd import Notifier

__all__ = ["Worker"]

_log = logging.getLogger("jetsplit.cloud")


@dataclass
class _Served:
    bundle: Bundle
    chain: Chain
    cloud_stages: frozenset[int]


class Worker:
    """Load bundles, bind, serve until stopped. See the module docstring."""

    def __init__(self, config: CloudConfig, notifier: Notifier | None = None) -> None:
        self.config = config
        self.notifier = notifier or Notifier()
        self.metrics = WorkerMetrics()
        self.batcher: Batcher[Request] = Batcher(config.max_batch, config.max_wait_ms)
        self.served: dict[str, _Served] = {}
        self._engines_stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.server: Server | None = None
        self.answered = 0
        self.accepted = 0
        self._socket_thread: int | None = None
        try:
            for spec in config.bundles:
                self._load(spec)
        except BaseException:
            self._close_chains()
            raise

    def _load(self, spec: str) -> None:
        bundle = load_bundle(spec)
        cloud = frozenset(i for i, s in enumerate(bundle.stages) if s.where == "cloud")
        if not cloud:
            raise ConfigError(f"bundle {bundle.name!r} ({spec}): has no cloud stages to serve")
        options = {"intra_op_threads": self.config.intra_op_threads} if self.config.backend == "onnxruntime" else {}
        chain = Chain.open(bundle, backend=self.config.backend, where="cloud", **options)
        self.served[bundle.fingerprint] = _Served(bundle, chain, cloud)

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        curve = None
        if self.config.curve_secret is not None and self.config.curve_allow is not None:
            curve = CurveServer(self.config.curve_secret, self.config.curve_allow)
        self.server = Server(list(self.config.bind), bundles=list(self.served), name="jetsplit-cloud", curve=curve)
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port, self.config.metrics_addr)
        for i in range(self.config.threads):
            t = threading.Thread(target=self._engine_loop, name=f"engine-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def endpoints(self) -> list[str]:
        if self.server is None:
            return []
        return [self.server.last_endpoint]

    def serve(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then drain and close."""
        server = self._require_server()
        self.notifier.ready(f"serving {len(self.served)} bundle(s)")
        self._socket_thread = threading.get_ident()
        inline = self.config.threads == 0
        try:
            while not stop.is_set():
                self.notifier.tick()
                wait_ms = 50
                if inline:
                    wait_ms = int(min(50.0, self.batcher.next_due() * 1000.0))
                req = server.recv(wait_ms)
                if req is not None:
                    self._accept(server, req)
                if inline:
                    self._run_ready()
            self.notifier.stopping()
            self._drain(server)
        finally:
            self.close()

    def _drain(self, server: Server) -> None:
        # Keep reading while work is pending or requests still arrive, so a request
        # already on its way is told "shutting down" (the client falls back or
        # re-sends elsewhere at once) instead of waiting out its deadline.
        end = time.monotonic() + self.config.drain_timeout_s
        quiet_since = time.monotonic()
        while time.monotonic() < end:
            req = server.recv(20)
            if self.config.threads == 0:
                self.batcher.close()  # release what is queued at once
                self._run_ready()
            if req is not None and isinstance(req.header, InferRequest):
                quiet_since = time.monotonic()
                self._answer_error(server, req, StatusCode.SHUTTING_DOWN, "worker is shutting down")
            elif not self.batcher.pending and time.monotonic() - quiet_since > 0.1:
                break
        if self.batcher.pending:
            _log.warning("drain timed out with %d requests unanswered", self.batcher.pending)
        server.recv(0)  # flush replies the engine threads posted last

    def close(self) -> None:
        self._engines_stop.set()
        self.batcher.close()
        for t in self._threads:
            t.join(timeout=5)
        self._threads.clear()
        if self.server is not None:
            self.server.close()
            self.server = None
        self.metrics.close()
        self._close_chains()

    def _close_chains(self) -> None:
        for s in self.served.values():
            s.chain.close()

    def _require_server(self) -> Server:
        if self.server is None:
            raise RuntimeError("Worker.start() has not been called")
        return self.server

    # -- socket thread ---------------------------------------------------------------
    def _answer_error(self, server: Server, req: Request, status: StatusCode, message: str) -> None:
        server.send_error(req, status, message)
        self.metrics.requests.labels(status=status.name.lower()).inc()

    def _accept(self, server: Server, req: Request) -> None:
        header = req.header
        if not isinstance(header, InferRequest):
            return
        served = self.served.get(header.bundle)
        if served is None:
            self._answer_error(server, req, StatusCode.UNKNOWN_BUNDLE,
                               f"bundle {header.bundle[:12]}... is not served here (serving {sorted(f[:12] for f in self.served)})")
            return
        if header.stage not in served.cloud_stages:
            self._answer_error(server, req, StatusCode.UNKNOWN_STAGE,
                               f"stage {header.stage} is not a cloud stage of {served.bundle.name!r} "
                               f"(cloud stages: {sorted(served.cloud_stages)})")
            return
        if req.expired():
            self._answer_error(server, req, StatusCode.EXPIRED, "deadline passed before the request was queued")
            return
        try:
            validate(served.chain, header.stage, req.tensors)
        except JetsplitError as exc:
            self._answer_error(server, req, StatusCode.BAD_REQUEST, str(exc))
            return
        self.accepted += 1
        self.metrics.in_flight.inc()
        self.batcher.put((header.bundle, header.stage), req, req.deadline_at)

    # -- engine threads -----------------------------------------------------------------
    def _engine_loop(self) -> None:
        while not self._engines_stop.is_set():
            batch = self.batcher.take(0.1)
            if batch is not None:
                self._run_guarded(batch)

    def _run_ready(self) -> None:
        """Inline mode: run every batch that is ready now, on the socket thread."""
        while (batch := self.batcher.take(0.0)) is not None:
            self._run_guarded(batch)

    def _run_guarded(self, batch: Batch[Request]) -> None:
        try:
            self._run_batch(batch)
        except Exception:  # a bug here must not end the loop: answer and go on
            _log.exception("engine failed on a batch")
            for req in batch.items:
                self._post(req, error_for(req.header.id, StatusCode.INTERNAL, "internal error"), (), "internal")
        finally:
            self.batcher.done(len(batch.items))

    def _post(self, req: Request, reply: object, payloads: Sequence[object], status: str) -> None:
        server = self.server
        if server is not None:
            if threading.get_ident() == self._socket_thread:
                server.send(req, reply, payloads)  # type: ignore[arg-type]
            else:
                server.post(req, reply, payloads)  # type: ignore[arg-type]
        self.answered += 1
        self.metrics.in_flight.dec()
        self.metrics.requests.labels(status=status).inc()

    def _run_batch(self, batch: Batch[Request]) -> None:
        for req in batch.expired:
            self._post(req, error_for(req.header.id, StatusCode.EXPIRED, "deadline passed in the queue"), (), "expired")
        if not batch.items:
            return
        fingerprint, stage = batch.key  # type: ignore[misc]
        served = self.served[fingerprint]
        self.metrics.batch_size.observe(len(batch.items))
        for waited in batch.waited_ms:
            self.metrics.queue_seconds.observe(waited / 1000.0)
        try:
            self._run_items(served, stage, batch.items, batch.waited_ms)
        except JetsplitError:
            # One bad request must not fail the others: rerun one by one.
            for req, waited in zip(batch.items, batch.waited_ms):
                try:
                    self._run_items(served, stage, [req], [waited])
                except JetsplitError as exc:
                    self._post(req, error_for(req.header.id, StatusCode.BAD_REQUEST, str(exc)[:1000]), (), "bad_request")

    def _run_items(self, served: _Served, stage: int, items: list[Request], waited_ms: list[float]) -> None:
        start = time.perf_counter()
        resume = stack(served.chain, stage, [r.tensors for r in items])
        res = served.chain.run_from(stage, resume.x, resume.carry, resume.state)
        compute_ms = (time.perf_counter() - start) * 1000.0
        self.metrics.compute_seconds.observe(compute_ms / 1000.0)
        for i, req in enumerate(items):
            header = req.header
            assert isinstance(header, InferRequest)
            reply, payloads = result_for(header, np.asarray(res.probs[i]), int(res.stage[i]),
                                         queue_ms=waited_ms[i], compute_ms=compute_ms)
            self._post(req, reply, payloads, "ok")
