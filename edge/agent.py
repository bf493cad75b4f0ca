"""The edge agent: camera frames in, exactly one result per frame out.

One agent serves every camera of a board. The muxer (:mod:`jetsplit.edge.muxer`)
reads each source on its own thread and hands over batches: the newest frame of
each source, at most ``max_batch``, pushed when full or after ``max_wait_ms``.
Per batch: preprocess, run the edge stages once on the batch. Per frame: gate.
Accepted: the result is final on the board. Not accepted: if offloading is
allowed (privacy switch, circuit breaker, window of requests in flight), the
frame's hand-off tensors go to the cloud asynchronously with a deadline
(:mod:`jetsplit.edge.offload`), and the loop goes on; the cloud's answer becomes
the result if it arrives before the deadline, else the best edge answer does,
marked ``fallback``. A cloud that is down, slow, or holds another bundle costs
accuracy, never a frame and never the frame rate; a source that breaks costs its
own frames, never another source's.

Results are emitted as they complete, each tagged with its ``source_id`` and its
frame index in that source. The budget controller moves the threshold of the
gate before the first cloud stage for the board; :mod:`jetsplit.edge.fairness`
shares what it allows between the sources; the circuit breaker stops offloading
to a failing cloud and probes it back with real requests.

Threads: each source's feed reads and prepares its frames; one engine thread
runs the edge stages on a batch (:meth:`EdgeAgent._infer`) while the loop thread
gates the batch before it (:meth:`EdgeAgent._judge`), offloads, and writes results.

Where to hook in (all on the loop thread): :meth:`EdgeAgent._finish` sees every
result once (per-frame path); :meth:`EdgeAgent._offload` every frame the gate
sends on (per-offload path); :meth:`EdgeAgent._judge` every batch the engine ran
(per-batch path); :meth:`EdgeAgent._prepare` runs on the feed threads, per frame
(a frame resize belongs there).

    >>> agent = EdgeAgent(config)                      # doctest: +SKIP
    >>> for result in agent.results():                 # doctest: +SKIP
    ...     print(result.source_id, result.frame, result.label, result.where)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from jetsplit.bundle import load_bundle
from jetsplit.chain import Chain, ChainResult
from jetsplit.edge.batch import Ran, row
from jetsplit.edge.breaker import CircuitBreaker
from jetsplit.edge.config import EdgeConfig
from jetsplit.edge.controller import BudgetController
from jetsplit.edge.fairness import FairShare
from jetsplit.edge.frame import Frame
from jetsplit.edge.monitor import FieldMonitor
from jetsplit.edge.muxer import Muxer
from jetsplit.edge.offload import Offloader, Pending
from jetsplit.edge.power import EnergyMeter, describe_board, detect_power
from jetsplit.edge.preflight import preflight
from jetsplit.edge.sinks import FrameResult, Sink, open_sinks
from jetsplit.edge.sources import Source, is_live, open_source
from jetsplit.edge.stats import AgentStats
from jetsplit.edge.status import Status
from jetsplit.edge.streams import SourceSpec
from jetsplit.errors import ConfigError, JetsplitError, SourceError
from jetsplit.systemd import Notifier

__all__ = ["AgentStats", "EdgeAgent"]

_log = logging.getLogger("jetsplit.edge")


class EdgeAgent:
    """Runs a bundle's edge stages on its sources and offloads what the gate is unsure of.

    ``source``: a source opened by the caller (used instead of the configured ones).
    """

    def __init__(self, config: EdgeConfig, source: Source | None = None, sinks: Sink | None = None) -> None:
        self.config = config
        self.bundle = load_bundle(config.bundle)
        options = {"intra_op_threads": config.intra_op_threads} if config.backend == "onnxruntime" else {}
        self.chain = Chain.open(self.bundle, backend=config.backend, where="edge", **options)
        self.first_cloud = self.bundle.first_cloud_stage()
        self.stop_event = threading.Event()
        self.notifier = Notifier()
        self.stats = AgentStats()
        self.breaker = CircuitBreaker(config.breaker)
        self.controller: BudgetController | None = None
        self.fair = FairShare()
        self.offload = preflight(config, self.bundle)  # what may leave the board, stated at start
        self.offload_block = self.offload.block
        if self.offload_block is None and self.first_cloud is not None:
            try:
                self.controller = BudgetController.for_bundle(self.bundle, config.budgets, config.controller)
            except ConfigError as exc:
                _log.warning("budget controller off: %s", exc)
        self.offloader: Offloader | None = None
        if self.offload_block is None:
            config.check_exposure(self.offload.mode)  # plaintext beyond loopback needs --insecure (SPEC.md 8)
            self.offloader = Offloader(config, self.bundle, self.breaker, self.controller, self._fallback)
        self.status = Status(self.stats, self.breaker, None if self.offloader is None else self.offloader.client,
                             config.status_interval_s)
        self.meter = EnergyMeter(detect_power(config.power), fallback=config.power.model())
        if self.controller is not None:
            self.controller.watch_power(lambda: self.meter.average_watts(config.power.average_s))
            if self.controller.early is not None and config.budgets.power_w is not None:
                _log.info("power budget: may offload early at stage %r",
                          self.bundle.stages[self.controller.early.gate].name)
        _log.info("power: %s; %s", self.meter.reader.description, describe_board(self.meter.reader.board_state()))
        # The agent owns the meter: its sampler runs from here to close().
        self.meter.start(config.power.interval_ms / 1000.0)
        self.source = source
        self.sinks = sinks
        self.muxer: Muxer | None = None
        # ``engine_threads`` batches run at once (ONNX Runtime sessions take
        # concurrent runs): an agent serving several streams uses the board's
        # cores for its one model instead of one core with 1 intra-op thread.
        self._engine = ThreadPoolExecutor(config.engine_threads, thread_name_prefix="engine")
        self._max_out = config.engine_threads + 1
        self._base_thresholds = self.bundle.thresholds()
        self._stage_names = [s.name for s in self.bundle.stages]
        self.monitor = FieldMonitor(self.bundle, config.monitor, self.controller,
                                    self.offload_block if self.offloader is None else None,
                                    frames_allowed=self.offload.mode == "frames")
        if self.offloader is not None:
            self.offloader.side = self.monitor

    @property
    def client(self) -> object:
        """The cloud client (a Client or a WorkerPool), None when local only."""
        return None if self.offloader is None else self.offloader.client

    def summary(self) -> dict[str, Any]:
        """The run's figures (:meth:`AgentStats.summary`) with the field monitor's
        ``drift`` (and ``audit``, ``field_trace``) sections."""
        return {**self.stats.summary(), **self.monitor.summary()}

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        self.monitor.close()
        if self.muxer is not None:
            self.muxer.stop()
        self._engine.shutdown(wait=True)
        if self.offloader is not None:
            self.offloader.close()
        self.chain.close()
        self.meter.stop()
        if self.source is not None:
            self.source.close()
        if self.sinks is not None:
            self.sinks.close()

    def stop(self) -> None:
        """Finish the frames in flight and end (thread-safe; SIGTERM calls it)."""
        self.stop_event.set()

    def _open(self, spec: SourceSpec) -> Source:
        if self.source is not None:
            return self.source
        return open_source(spec.uri, realtime=bool(spec.realtime), fps=spec.fps, source_id=spec.source_id)

    def _muxer(self) -> Muxer:
        if self.source is not None:
            # A source the caller opened: one feed on it, finite unless it is a camera.
            # Never retried (it cannot be reopened); paced when it is a camera or realtime.
            paced = self.source.live or bool(getattr(self.source, "realtime", False))
            specs: Sequence[SourceSpec] = (SourceSpec(self.source.uri, self.source.source_id, realtime=paced),)
            return Muxer(specs, self._open, lambda uri: False, max_batch=self.config.mux.max_batch,
                         max_wait_ms=self.config.mux.max_wait_ms, prepare=self._prepare)
        return Muxer(self.config.source_specs(), self._open, is_live, max_batch=self.config.mux.max_batch,
                     max_wait_ms=self.config.mux.max_wait_ms, prepare=self._prepare)

    def _prepare(self, image: np.ndarray) -> np.ndarray:
        """One frame made ready for the first stage, on its source's thread."""
        return self.chain.preprocess([image])

    # -- running -----------------------------------------------------------------------
    def run(self) -> AgentStats:
        """Read the sources to their end (or until stopped), writing every result to the sinks."""
        if self.sinks is None:
            self.sinks = open_sinks(self.config.sinks)
        for result in self.results():
            self.sinks.write(result)
        return self.stats

    def results(self) -> Iterator[FrameResult]:
        """Process the sources batch by batch; yield each result as it completes."""
        self.muxer = mux = self._muxer().start()
        if self.offloader is not None:
            self.offloader.client.wait_ready(min(1000, int(self.config.deadline_ms)))
        self.status.started()
        # The engine runs batch k+1 on its thread (ONNX Runtime releases the GIL)
        # while this thread gates batch k and writes its results: at most
        # engine_threads + 1 batches out, judged in order.
        running: deque[Future[Ran]] = deque()
        max_out = self._max_out
        while running or (not self.stop_event.is_set() and not mux.finished):
            self.notifier.tick()
            self.status.tick()
            if len(running) < max_out and not self.stop_event.is_set():
                # Wait for a batch in short slices (or until the running one is done),
                # answering replies and deadlines in between, so a cloud answer is
                # not held back by a slow source.
                batch, inputs = mux.next_batch(self._slice_s(), wake=lambda: bool(running) and running[0].done())
                if batch:
                    future = self._engine.submit(self._infer, batch, inputs, *self._thresholds(batch))
                    future.add_done_callback(lambda _: mux.wake())
                    running.append(future)
            yield from self._service(0)
            if running and (running[0].done() or len(running) == max_out or self.stop_event.is_set() or mux.finished):
                yield from self._judge(running.popleft().result())
        # End of input or stop: every frame in flight gets its result by its deadline.
        while self.offloader is not None and (self.offloader.inflight or self.monitor.audits_in_flight):
            self.notifier.tick()
            yield from self._service(5)
        mux.stop()
        for feed in mux.feeds:
            self.stats.source(feed.source_id).dropped = feed.dropped
            if feed.error is not None:
                self.stats.errors[feed.source_id] = feed.error
        self.stats.dropped = sum(f.dropped for f in mux.feeds)
        self.stats.power = self.meter.status()
        if self.controller is not None:
            self.stats.budget = self.controller.summary()
        if not self.stop_event.is_set() and all(f.opens == 0 and f.error for f in mux.feeds):
            # Nothing could be read at all (a wrong path, a typo): that is the
            # operator's error, not an empty stream.
            raise SourceError("; ".join(f"{f.error}" for f in mux.feeds))

    def _slice_s(self) -> float:
        """How long to wait for a batch before looking at replies again."""
        soonest = None if self.offloader is None else self.offloader.soonest()
        if soonest is None:
            return 0.05
        return min(0.005, max(0.0005, soonest - time.monotonic()))

    def process(self, frame: Frame) -> Iterator[FrameResult]:
        """One frame through the edge stages; yields its result unless it was offloaded."""
        return self.process_batch([frame])

    def process_batch(self, frames: Sequence[Frame], inputs: np.ndarray | None = None) -> Iterator[FrameResult]:
        """Frames (of different sources) through the edge stages as one batch; yields
        the result of each frame not offloaded. ``inputs``: the frames already
        prepared for the first stage (else they are prepared here)."""
        return self._judge(self._infer(frames, inputs, *self._thresholds(frames)))

    def _infer(self, frames: Sequence[Frame], inputs: np.ndarray | None, thresholds: tuple[float | None, ...] | None,
               board: float | None, mine: list[float | None], audit: list[bool]) -> Ran:
        """The edge stages on a batch (the engine thread's part: no Python state is touched)."""
        t0 = time.monotonic()
        early_rows = None
        early = self.controller.early if self.controller is not None else None
        try:
            x = self.chain.preprocess([f.image for f in frames]) if inputs is None else inputs
            res: ChainResult | JetsplitError
            if early is not None:
                res, early_rows = early.run(self.chain, x, thresholds)
            else:
                res = self.chain.run_from(0, x, stop_at=self.first_cloud, thresholds=thresholds)
        except JetsplitError as exc:
            res = exc
        return Ran(frames, res, board, mine, audit, t0, time.monotonic(), early_rows)

    def _judge(self, ran: Ran) -> Iterator[FrameResult]:
        """Gate each frame of a batch the engine ran: its result, or its offload."""
        frames, res = ran.frames, ran.res
        if isinstance(res, JetsplitError):
            if len(frames) > 1:
                # One broken frame must not cost its batch-mates: run them one by one.
                for f in frames:
                    yield from self.process_batch([f])
                return
            # A broken frame (wrong size, corrupt) is reported and skipped, never fatal.
            frame = frames[0]
            _log.warning("%s frame %d: %s", frame.source_id, frame.index, res)
            yield self._finish(FrameResult(frame.index, -1, "", 0.0, "", "fallback",
                                           (time.monotonic() - frame.t_capture) * 1000.0,
                                           truth=frame.truth, t_capture=frame.t_capture,
                                           source_id=frame.source_id, reason=f"bad frame: {res}"), None, False)
            return
        gate = None if self.controller is None else self.controller.gate_stage
        stage_ms = {self._stage_names[i]: t for i, t in enumerate(res.stage_time_ms) if t}
        share_mj = self.meter.frame_energy_j(ran.t0, ran.t1, stage_ms) * 1000.0 / len(frames)
        for i, frame in enumerate(frames):
            reached = gate is not None and int(res.stage[i]) == gate
            score = float(res.score[i]) if reached else float("inf")
            if gate is not None:
                self.fair.observe(frame.source_id, score)
            if int(res.stage[i]) == self.monitor.gate_stage:
                # Drift is watched with or without a controller (a local-only agent too).
                self.monitor.observe(frame.index, frame.source_id, float(res.score[i]))
            own = ran.mine[i]
            p = Pending(frame, row(res, i), score, own, ran.board, energy_mj=share_mj)
            if ran.early is not None and ran.early[i]:
                p.early = True
                yield from self._offload(p)
            elif res.accepted[i] or (own is not None and score >= own):
                if ran.audit[i] and reached:
                    self._send_audit(p)
                yield self._finish(self._result(p, "edge"), p, False)
            else:
                yield from self._offload(p)

    def _thresholds(self, frames: Sequence[Frame]) -> tuple[tuple[float | None, ...] | None, float | None,
                                                             list[float | None], list[bool]]:
        """The chain's thresholds for a batch, the board's gate threshold (from the
        budget controller), each frame's own (its source's fair share), and which
        frames the shadow audit picked."""
        if self.controller is None or self.controller.gate_stage is None:
            return None, None, [None] * len(frames), [False] * len(frames)
        gate = self.controller.gate_stage
        thresholds = self.controller.thresholds(self._base_thresholds)
        board = thresholds[gate]
        if board is None:
            return thresholds, None, [None] * len(frames), [False] * len(frames)
        per_source = self.fair.thresholds(board, self._base_thresholds[gate] or board)
        mine: list[float | None] = [per_source.get(f.source_id, board) for f in frames]
        audit = [self.monitor.pick_audit() for _ in frames]
        # The batch is gated at the highest of its frames' thresholds; each frame
        # is then judged by its own. A frame picked for a shadow audit runs past the
        # gate (the carry it needs is kept), and is still judged by its own.
        top = float("inf") if any(audit) else max(t for t in mine if t is not None)
        return tuple(top if i == gate else t for i, t in enumerate(thresholds)), board, mine, audit

    def _offload(self, p: Pending) -> Iterator[FrameResult]:
        """A frame the gate sends on: to the cloud if it may go now, else its edge answer."""
        reason = "local only" if self.offloader is None else self.offloader.why_not()
        if self.offloader is not None and reason == "window full" and not self._paced():
            # Files read as fast as they go have no frame rate to protect: wait for
            # a slot in the window rather than give up on the cloud.
            while self.offloader.why_not() == "window full":
                yield from self._service(50)
            reason = self.offloader.why_not()
        if reason is None and self.offloader is not None and p.edge.next_stage is not None:
            t = time.monotonic()
            reason = self.offloader.submit(p, p.edge.next_stage)
            if reason is None:
                p.radio_mj = self.meter.frame_energy(t, t, {}, p.bytes_up).radio_j * 1000.0
                p.energy_mj += p.radio_mj
                self.stats.count_offload(p.frame.source_id)
                return
        yield self._finish(self._result(p, "fallback", reason=reason), p, False)

    def _send_audit(self, p: Pending) -> None:
        """Send a frame the edge kept to the cloud as well (shadow audit); its
        result stays the edge's, with the bytes it cost."""
        off, stage = self.offloader, p.edge.next_stage
        if off is None or stage is None or off.why_not() is not None \
                or self.monitor.audits_in_flight >= max(1, self.config.window // 2):
            self.monitor.skip_audit()
            return
        rid = off.send(p, stage)
        if rid is None:
            self.monitor.skip_audit()
            return
        p.energy_mj += self.meter.frame_energy_j(0.0, 0.0, {}, p.bytes_up) * 1000.0
        self.monitor.audit_sent(rid, p.frame.index, p.frame.source_id, int(p.edge.pred[0]), p.score,
                                sum(p.edge.stage_time_ms), p.bytes_up, p.deadline_at, p.frame.truth, p.frame.image)

    def _paced(self) -> bool:
        """True when frames arrive at their sources' own rate (cameras, realtime files)."""
        return self.muxer is not None and self.muxer.paced

    def _service(self, timeout_ms: int) -> Iterator[FrameResult]:
        if self.offloader is None:
            return
        for pending, result in self.offloader.service(timeout_ms):
            yield self._finish(result, pending, True)

    # -- results ---------------------------------------------------------------------------
    def _result(self, p: Pending, where: str, reason: str | None = None) -> FrameResult:
        res, frame = p.edge, p.frame
        class_id = int(res.pred[0])
        return FrameResult(
            frame=frame.index, class_id=class_id, label=self.bundle.labels[class_id],
            score=float(res.probs[0, class_id]), stage=self._stage_names[int(res.stage[0])],
            where=where,  # type: ignore[arg-type]
            latency_ms=(time.monotonic() - frame.t_capture) * 1000.0, bytes_up=p.bytes_up, energy_mj=p.energy_mj,
            truth=frame.truth, t_capture=frame.t_capture, source_id=frame.source_id, threshold=p.threshold,
            reason=reason, radio_mj=p.radio_mj, alarm=self.monitor.alarm,
        )

    def _fallback(self, p: Pending, reason: str) -> FrameResult:
        return self._result(p, "fallback", reason=reason)

    def _finish(self, result: FrameResult, p: Pending | None, offloaded: bool) -> FrameResult:
        """Every result passes here once: counted, and fed to the budget controller."""
        self.stats.add(result)
        if offloaded and result.where == "cloud" and p is not None:
            f = p.frame
            self.monitor.offloaded(f.index, f.source_id, p.score, int(p.edge.pred[0]), result.class_id,
                                   sum(p.edge.stage_time_ms), result.latency_ms, p.bytes_up, f.truth, f.image)
        if self.controller is not None and p is not None:
            # The controller steers the board: it is told the board threshold, under
            # which this frame's score would have been judged (fairness shares it out).
            self.controller.observe_frame(p.score, offloaded, result.latency_ms, result.bytes_up, result.energy_mj,
                                          threshold=p.board_threshold,
                                          missed=offloaded and result.where == "fallback",
                                          radio_mj=result.radio_mj, early=p.early, stage=int(p.edge.stage[0]))
            self.controller.update()
        return result
