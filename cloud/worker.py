"""The cloud worker: a ZeroMQ ROUTER serving many edges.

Threads and their roles:

- the socket thread (the caller of :meth:`Worker.serve`) owns the socket: it
  receives, validates (fingerprint, stage, tensors) and queues requests in the
  batcher, answers what is wrong at once, forms the batches, sends the replies,
  and pings the systemd watchdog;
- ``threads`` engine threads take formed batches per (bundle, stage), run the chain from
  that stage to the end (ONNX Runtime and TensorRT release the GIL), and hand the
  batch's scores back to the socket thread in one call, which builds and sends the
  replies: an engine thread spends its core on the model, not on the protocol.
  With ``threads = 0`` the socket thread runs the batches itself between
  receives: no hand-off between threads, which is what a worker pinned to one
  core wants (the threads would only take turns on it).
- ``engine_cpus`` and ``io_cpus`` place the two kinds of thread on separate cores
  (cloud/placement.py).

A malformed or hostile request costs an error reply and nothing else: the decoder
enforces every limit before allocating, and any exception in a batch is answered
per request.

Past capacity, admission control (cloud/admission.py) keeps the worker useful: the
socket thread reads ahead (the ZeroMQ pipes, whose high-water mark is lowered to
``rcvhwm``, never become the real queue), refuses from the header alone what its
bounded queue could not serve in time (``OVERLOADED``), and drops what went stale
from the head of the queue (``EXPIRED``).

On stop (SIGTERM), the socket thread stops accepting work (new requests are
answered ``shutting down``), waits for everything it accepted to be answered,
then closes.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np

from jetsplit import halfcast
from jetsplit.bundle import Bundle, load_bundle
from jetsplit.chain import Chain
from jetsplit.cloud.admission import Admission, QueueLimits, held_bytes
from jetsplit.cloud.batcher import Batch, Batcher
from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.describe import describe_bundle
from jetsplit.cloud.metrics import WorkerMetrics
from jetsplit.cloud.placement import available_cpus, pin_thread, pinned
from jetsplit.errors import ConfigError, JetsplitError
from jetsplit.handoff import Resume, stack, validate
from jetsplit.protocol import CurveServer, Server, StatusCode
from jetsplit.protocol.codec import error_for, result_for
from jetsplit.protocol.messages import InferRequest
from jetsplit.protocol.payloads import decodable_compressions
from jetsplit.protocol.transport import DEFAULT_OPTIONS, Request
from jetsplit.systemd import Notifier

__all__ = ["Worker"]

_log = logging.getLogger("jetsplit.cloud")

# Read ahead: the most requests the socket thread takes from ZeroMQ in a row
# before it forms batches again (a few ms of decoding at most).
_READ_AHEAD = 256


@dataclass
class _Served:
    bundle: Bundle
    chain: Chain
    cloud_stages: frozenset[int]


@dataclass
class _Job:
    """A formed batch waiting for an engine thread; ``resume`` is None when the
    requests could not be stacked together (run one by one)."""

    batch: Batch[Request]
    served: _Served
    stage: int
    resume: Resume | None
    earliest: float  # the first deadline among the requests (monotonic)
    run_s: float = 0.0  # how long the batch is expected to run (admission's estimate; 0: unknown)


class Worker:
    """Load bundles, bind, serve until stopped. See the module docstring."""

    def __init__(self, config: CloudConfig, notifier: Notifier | None = None) -> None:
        config.check_exposure()  # before anything loads: plaintext beyond loopback needs --insecure
        self.config = config
        self.notifier = notifier or Notifier()
        self.metrics = WorkerMetrics()
        self.batcher: Batcher[Request] = Batcher(config.max_batch, config.max_wait_ms)
        self.served: dict[str, _Served] = {}
        self._engines_stop = threading.Event()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._idle_engines = 0  # engine threads waiting for a job
        self._idle_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.server: Server | None = None
        self.answered = 0
        self.accepted = 0
        self._socket_thread: int | None = None
        # Engine threads without engine_cpus must not inherit io_cpus from the
        # socket thread that starts them: remember the process's CPUs.
        self._engine_cpus = config.engine_cpus or tuple(sorted(available_cpus()))
        self._ok = self.metrics.requests.labels(status="ok")
        self._shed_counters: dict[tuple[StatusCode, str], tuple[Any, Any]] = {}
        try:
            # Sessions created here start their thread pools here: on the engine CPUs.
            with pinned(config.engine_cpus):
                for spec in config.bundles:
                    self._load(spec)
        except BaseException:
            self._close_chains()
            raise
        halfcast.warm()  # not on the first batch: it would stall the first burst (jetsplit/halfcast.py)
        keys = {(fp, stage) for fp, s in self.served.items() for stage in s.cloud_stages}
        limits = QueueLimits.sized(len(keys), config.queue_requests, config.queue_mib)
        self.admission = Admission(limits, self.batcher, config.max_batch, max(1, config.threads), keys,
                                   on_refuse=self._count_shed)
        self._watch_queues(keys)
        _log.info("admission: per (bundle, stage) queue of %d requests and %.1f MiB; rcvhwm %d per edge",
                  limits.requests, limits.bytes / 2**20, config.rcvhwm)

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
        """Bind and start the engine threads. Call from the thread that will
        :meth:`serve`: it is pinned to ``io_cpus`` here, before the socket's
        context starts libzmq's I/O thread (which inherits the placement)."""
        pin_thread(self.config.io_cpus)
        curve = None
        if self.config.curve_secret is not None and self.config.curve_allow is not None:
            curve = CurveServer(self.config.curve_secret, self.config.curve_allow)
        # keep_f16: float16 activations are kept as they came, then stacked and
        # widened once per batch when it is formed (jetsplit/halfcast.py).
        self.server = Server(list(self.config.bind), bundles=list(self.served), name="jetsplit-cloud", curve=curve,
                             keep_f16=True, screen=self.admission.screen,
                             options=replace(DEFAULT_OPTIONS, rcvhwm=self.config.rcvhwm))
        described = [describe_bundle(s.bundle, s.chain, decodable_compressions()) for s in self.served.values()]
        self.server.describe = lambda: described
        self.server.load = lambda: self.accepted - self.answered  # queued or running
        self.admission.wire_limits = self.server.limits
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
        try:
            while not stop.is_set():
                self.notifier.tick()
                req = server.recv(self._wait_ms())
                # Read ahead: take what ZeroMQ holds into the bounded queue (or
                # refuse it) before forming batches, even while they run inline.
                # Every request received is accepted or refused: the last read
                # of a full read-ahead is not left behind.
                taken = 0
                while req is not None:
                    self._accept(server, req)
                    taken += 1
                    req = server.recv(0) if taken < _READ_AHEAD else None
                self._drop_stale()
                self._dispatch()
            self.notifier.stopping()
            self._drain(server)
        finally:
            self.close()

    def _wait_ms(self) -> int:
        """How long the socket thread may wait for a request: until the next batch
        is due when an engine could take it (an engine thread that goes idle wakes
        the socket thread to form what is due)."""
        if self.config.threads and (self._jobs.qsize() >= self.config.threads or not self._idle_engines):
            return 50
        due = self.batcher.next_due()
        return 50 if due >= 0.05 else math.ceil(due * 1000.0)

    def _drain(self, server: Server) -> None:
        # Keep reading while work is pending or requests still arrive, so a request
        # already on its way is told "shutting down" (the client falls back or
        # re-sends elsewhere at once) instead of waiting out its deadline.
        end = time.monotonic() + self.config.drain_timeout_s
        quiet_since = time.monotonic()
        server.state = "draining"  # pongs say so: edges send new work elsewhere
        while time.monotonic() < end:
            req = server.recv(20)
            self.batcher.close()  # release what is queued at once
            self._dispatch()
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
        # SPEC.md 6.1: a malformed request is BAD_REQUEST ("fix the client") even
        # when it is also late (EXPIRED only says "fall back").
        try:
            validate(served.chain, header.stage, req.tensors)
        except JetsplitError as exc:
            self._answer_error(server, req, StatusCode.BAD_REQUEST, str(exc))
            return
        if req.expired():
            self._answer_error(server, req, StatusCode.EXPIRED, "deadline passed before the request was queued")
            self.metrics.shed.labels(status="expired", reason="arrival").inc()
            return
        self.accepted += 1
        self.metrics.in_flight.inc()
        self.batcher.put((header.bundle, header.stage), req, req.deadline_at, held_bytes(header, req.nbytes))

    # -- admission (cloud/admission.py) -------------------------------------------------
    def _count_shed(self, status: StatusCode, reason: str) -> None:
        """A request answered without running: counted by status and reason.
        The labelled counters are kept: a flood refuses tens of thousands a
        second, and ``labels()`` costs more than the rest of a refusal's count."""
        counters = self._shed_counters.get((status, reason))
        if counters is None:
            name = status.name.lower()
            counters = (self.metrics.shed.labels(status=name, reason=reason),
                        self.metrics.requests.labels(status=name))
            self._shed_counters[(status, reason)] = counters
        counters[0].inc()
        counters[1].inc()

    def _drop_stale(self) -> None:
        """Answer EXPIRED, from the head of each queue, what could no longer be
        served in time."""
        for _, items in self.batcher.drop_stale(time.monotonic(), self.admission.horizon):
            self._send_errors(items, StatusCode.EXPIRED, "deadline would pass before the request could run",
                              reason="queue")

    def _watch_queues(self, keys: set[tuple[str, int]]) -> None:
        """Queue depth, bytes and measured rate per key, read when scraped."""
        m, batcher, model = self.metrics, self.batcher, self.admission.model
        for key in keys:
            labels = {"bundle": self.served[key[0]].bundle.name, "stage": str(key[1])}
            m.queue_depth.labels(**labels).set_function(functools.partial(lambda k: batcher.queued(k)[0], key))
            m.queue_bytes.labels(**labels).set_function(functools.partial(lambda k: batcher.queued(k)[1], key))
            m.service_rate.labels(**labels).set_function(functools.partial(model.rate, key))

    # -- batches -------------------------------------------------------------------------
    def _dispatch(self) -> None:
        """On the socket thread: form the batches that are ready and give each to
        an engine thread, or run it here when ``threads = 0``.

        At most one formed batch waits per engine thread, so a batch is formed as
        late as possible (fuller, most urgent first) yet is ready the moment an
        engine finishes the one before. Forming a batch (stacking its tensors,
        widening float16) happens here, where the requests were just decoded and
        sit in this core's cache, so an engine thread only runs the model.
        """
        inline = self.config.threads == 0
        while inline or (queued := self._jobs.qsize()) < self.config.threads:
            # A batch that is only due (not full) is formed when an engine waits
            # for it; while they are all busy it goes on filling.
            batch = self.batcher.take(partial=inline or self._idle_engines > queued)
            if batch is None:
                return
            job = self._form(batch)
            if job is None:
                continue
            if inline:
                self._run_job(job)
            else:
                self._jobs.put(job)

    def _form(self, batch: Batch[Request]) -> _Job | None:
        if batch.expired:
            self._send_errors(batch.expired, StatusCode.EXPIRED, "deadline passed in the queue", reason="queue")
        if not batch.items:
            return None
        fingerprint, stage = cast("tuple[str, int]", batch.key)  # the key put() was given
        served = self.served[fingerprint]
        try:
            resume: Resume | None = stack(served.chain, stage, [r.tensors for r in batch.items])
        except JetsplitError:
            resume = None  # one bad request: the engine runs them one by one
        except Exception:  # a bug must not end the socket thread: answer and go on
            _log.exception("forming a batch failed")
            self._send_errors(batch.items, StatusCode.INTERNAL, "internal error")
            self.batcher.done(len(batch.items))
            return None
        return _Job(batch, served, stage, resume, min(r.deadline_at for r in batch.items),
                    self.admission.horizon(batch.key, len(batch.items)))

    def _engine_loop(self) -> None:
        pin_thread(self._engine_cpus)
        while not self._engines_stop.is_set():
            job: _Job | None
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                job = self._wait_for_job()
                if job is None:
                    continue
            server = self.server
            if server is not None:
                server.call_soon(self._dispatch)  # room for the next batch: form it now
            self._run_job(job)

    def _wait_for_job(self) -> _Job | None:
        """Idle: say so (the socket thread may now form a batch that is only due,
        not full) and wait for one."""
        with self._idle_lock:
            self._idle_engines += 1
        try:
            server = self.server
            if server is not None:
                server.call_soon(self._dispatch)
            return self._jobs.get(timeout=0.1)
        except queue.Empty:
            return None
        finally:
            with self._idle_lock:
                self._idle_engines -= 1

    def _run_job(self, job: _Job) -> None:
        items, waited_ms, resume = job.batch.items, job.batch.waited_ms, job.resume
        try:
            # A formed batch may have waited for its engine: what would be late by
            # the time it finishes is answered expired, not run (its engine time
            # goes to requests that can still be served).
            done_at = time.monotonic() + job.run_s
            if job.earliest <= done_at:  # one comparison per batch on the engine thread
                keep = [i for i, r in enumerate(items) if r.deadline_at > done_at]
                self._deliver_errors([r for r in items if r.deadline_at <= done_at], StatusCode.EXPIRED,
                                     "deadline would pass before its batch finished", reason="engine")
                items, waited_ms = [items[i] for i in keep], [waited_ms[i] for i in keep]
                if resume is not None:
                    resume = resume.take(np.asarray(keep, np.int64))
                if not items:
                    return
            if resume is not None:
                try:
                    self._run_items(job.served, job.stage, items, waited_ms, resume)
                    return
                except JetsplitError:
                    pass
            # One bad request must not fail the others: rerun one by one.
            for req, waited in zip(items, waited_ms):
                try:
                    resume = stack(job.served.chain, job.stage, [req.tensors])
                    self._run_items(job.served, job.stage, [req], [waited], resume)
                except JetsplitError as exc:
                    self._deliver_errors([req], StatusCode.BAD_REQUEST, str(exc)[:1000])
        except Exception:  # a bug here must not end the loop: answer and go on
            _log.exception("engine failed on a batch")
            self._deliver_errors(items, StatusCode.INTERNAL, "internal error")
        finally:
            self.batcher.done(len(job.batch.items))

    def _on_socket_thread(self) -> bool:
        return threading.get_ident() == self._socket_thread

    def _hand_over(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the socket thread: now if this is it, else posted."""
        server = self.server
        if self._on_socket_thread() or server is None:
            fn(*args)
        else:
            server.call_soon(lambda: fn(*args))

    def _deliver_errors(self, items: Sequence[Request], status: StatusCode, message: str,
                        reason: str | None = None) -> None:
        self._hand_over(self._send_errors, list(items), status, message, reason)

    def _send_errors(self, items: list[Request], status: StatusCode, message: str, reason: str | None = None) -> None:
        """Answer ``items`` with ``status``; ``reason``: they were shed (metrics)."""
        server = self.server
        for req in items:
            if server is not None:
                server.send(req, error_for(req.header.id, status, message, req.header.v))
        self._answered(len(items), status.name.lower())
        if reason is not None and items:
            self.metrics.shed.labels(status=status.name.lower(), reason=reason).inc(len(items))

    def _answered(self, count: int, status: str) -> None:
        self.answered += count
        self.metrics.in_flight.dec(count)
        (self._ok if status == "ok" else self.metrics.requests.labels(status=status)).inc(count)

    def _run_items(self, served: _Served, stage: int, items: list[Request], waited_ms: list[float],
                   resume: Resume) -> None:
        start = time.perf_counter()
        res = served.chain.run_from(stage, resume.x, resume.carry, resume.state)
        compute_ms = (time.perf_counter() - start) * 1000.0
        self._hand_over(self._send_results, items, res.probs, res.stage, waited_ms, compute_ms)

    def _send_results(self, items: list[Request], probs: np.ndarray, stages: np.ndarray,
                      waited_ms: list[float], compute_ms: float) -> None:
        """On the socket thread: one ``result`` per request of a batch, and its metrics."""
        server = self.server
        metrics = self.metrics
        metrics.batch_size.observe(len(items))
        metrics.compute_seconds.observe(compute_ms / 1000.0)
        now = time.monotonic()
        header = items[0].header
        self.admission.batch_done((header.bundle, header.stage), len(items), compute_ms / 1000.0, now)  # type: ignore[union-attr]
        metrics.goodput.inc(sum(1 for r in items if r.deadline_at > now))
        observe_queue = metrics.queue_seconds.observe
        stage_list = stages.tolist()
        for i, req in enumerate(items):
            observe_queue(waited_ms[i] / 1000.0)
            if server is not None:
                reply, payloads = result_for(req.header, probs[i], stage_list[i],  # type: ignore[arg-type]
                                             queue_ms=waited_ms[i], compute_ms=compute_ms)
                server.send(req, reply, payloads)
        self._answered(len(items), "ok")
