"""The edge agent: camera frames in, exactly one result per frame out.

Per frame: preprocess, run the edge stages, gate. Accepted: the result is final on
the board. Not accepted: if offloading is allowed (privacy switch, circuit
breaker, window of requests in flight), the frame's hand-off tensors go to the
cloud asynchronously with a deadline, and the loop goes on with the next frame; the
cloud's answer becomes the result if it arrives before the deadline, else the best
edge answer does, marked ``fallback``. A cloud that is down, slow, or holds another
bundle costs accuracy, never a frame and never the frame rate.

Results are emitted as they complete, each tagged with its frame index (edge
answers do not wait behind slower cloud answers). The budget controller moves the
threshold of the gate before the first cloud stage; the circuit breaker stops
offloading to a failing cloud and probes it back with real requests.

    >>> agent = EdgeAgent(config)                      # doctest: +SKIP
    >>> for result in agent.results():                 # doctest: +SKIP
    ...     print(result.frame, result.label, result.where)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jetsplit.bundle import load_bundle
from jetsplit.chain import Chain, ChainResult
from jetsplit.edge.breaker import CircuitBreaker
from jetsplit.edge.config import EdgeConfig
from jetsplit.edge.controller import BudgetController
from jetsplit.edge.pool import WorkerPool, is_dns_endpoint
from jetsplit.edge.power import EnergyMeter, detect_power
from jetsplit.edge.sinks import FrameResult, Sink, open_sinks
from jetsplit.edge.sources import Frame, FrameTimeout, Source, open_source
from jetsplit.errors import ConfigError, JetsplitError, SourceError
from jetsplit.handoff import FRAME, needed, pack, wire_encodings
from jetsplit.protocol import Client, CurveClient, StatusCode
from jetsplit.protocol.client import Reply
from jetsplit.protocol.errors import Unavailable
from jetsplit.systemd import Notifier

__all__ = ["AgentStats", "EdgeAgent"]

_log = logging.getLogger("jetsplit.edge")


@dataclass
class AgentStats:
    frames: int = 0
    edge: int = 0
    cloud: int = 0
    fallback: int = 0
    offloaded: int = 0
    bytes_up: int = 0
    energy_mj: float = 0.0
    dropped: int = 0  # frames the source captured but never delivered (a camera's)
    correct: int = 0
    labelled: int = 0
    exits: dict[str, int] = field(default_factory=dict)
    latencies_ms: list[float] = field(default_factory=list)
    fallback_reasons: dict[str, int] = field(default_factory=dict)

    def add(self, r: FrameResult) -> None:
        self.frames += 1
        setattr(self, r.where, getattr(self, r.where) + 1)
        self.bytes_up += r.bytes_up
        self.energy_mj += r.energy_mj
        self.exits[r.stage] = self.exits.get(r.stage, 0) + 1
        self.latencies_ms.append(r.latency_ms)
        if r.truth is not None:
            self.labelled += 1
            self.correct += int(r.label == r.truth)
        if r.reason:
            self.fallback_reasons[r.reason] = self.fallback_reasons.get(r.reason, 0) + 1

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        n = max(self.frames, 1)
        return {
            "frames": self.frames,
            "dropped": self.dropped,
            "accuracy": self.correct / self.labelled if self.labelled else None,
            "edge": self.edge, "cloud": self.cloud, "fallback": self.fallback,
            "offload_fraction": self.offloaded / n,
            "exits": dict(self.exits),
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)),
            "bytes_up_per_frame": self.bytes_up / n,
            "energy_mj_per_frame": self.energy_mj / n,
            "fallback_reasons": dict(self.fallback_reasons),
        }


@dataclass
class _InFlight:
    frame: Frame
    edge: ChainResult
    threshold: float | None
    score: float
    deadline_at: float
    bytes_up: int
    energy_mj: float


class EdgeAgent:
    """Runs a bundle's edge stages on a source and offloads what the gate is unsure of."""

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
        self.offload_block = self._offload_block()
        if self.offload_block is None and self.first_cloud is not None:
            try:
                self.controller = BudgetController.for_bundle(self.bundle, config.budgets, config.controller)
            except ConfigError as exc:
                _log.warning("budget controller off: %s", exc)
        self.client: Client | WorkerPool | None = None
        if self.offload_block is None:
            curve = None
            if config.curve_secret is not None and config.curve_server_key is not None:
                curve = CurveClient(config.curve_secret, config.curve_server_key)
            # Several workers, or a name that may resolve to several: balance and fail
            # over per worker (edge/pool.py). One fixed endpoint keeps the plain client.
            timeout_ms = int(config.deadline_ms)
            if len(config.cloud) > 1 or any(map(is_dns_endpoint, config.cloud)):
                p = config.pool
                self.client = WorkerPool(
                    list(config.cloud), self.bundle.fingerprint, timeout_ms=timeout_ms, curve=curve,
                    heartbeat_ms=p.heartbeat_ms, dead_after_ms=p.dead_after_ms, timeout_strikes=p.timeout_strikes,
                    hold_down_s=p.hold_down_s, resolve_interval_s=p.resolve_interval_s,
                    overload_hold_ms=p.overload_hold_ms,
                )
            else:
                self.client = Client(list(config.cloud), self.bundle.fingerprint, timeout_ms=timeout_ms, curve=curve)
        else:
            _log.info("local only: %s", self.offload_block)
        self.meter = EnergyMeter(detect_power(config.power))
        self.source = source
        self.sinks = sinks
        self._inflight: dict[int, _InFlight] = {}
        self._mismatch_reported = False
        self._base_thresholds = self.bundle.thresholds()
        self._stage_names = [s.name for s in self.bundle.stages]
        self._encodings = wire_encodings(self.bundle)

    def _offload_block(self) -> str | None:
        """Why nothing may be offloaded, or None."""
        if self.first_cloud is None:
            return "the bundle has no cloud stages"
        if not self.config.cloud:
            return "no cloud endpoint configured"
        if self.config.offload == "none":
            return "offload = none"
        if self.config.offload == "activations" and FRAME in needed(self.bundle, self.first_cloud):
            return (f"offload = activations, but the cloud stage {self.bundle.stages[self.first_cloud].name!r} "
                    "needs the frame (set offload = frames to allow frames to leave the board)")
        return None

    # -- lifecycle ---------------------------------------------------------------------
    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        self.chain.close()
        self.meter.stop()
        if self.source is not None:
            self.source.close()
        if self.sinks is not None:
            self.sinks.close()

    def stop(self) -> None:
        """Finish the frames in flight and end (thread-safe; SIGTERM calls it)."""
        self.stop_event.set()

    # -- running -----------------------------------------------------------------------
    def run(self) -> AgentStats:
        """Read the source to its end (or until stopped), writing every result to the sinks."""
        if self.source is None:
            self.source = open_source(self.config.source, realtime=self.config.realtime, fps=self.config.fps)
        if self.sinks is None:
            self.sinks = open_sinks(self.config.sinks)
        for result in self.results():
            self.sinks.write(result)
        return self.stats

    def results(self) -> Iterator[FrameResult]:
        """Process the source frame by frame; yield each result as it completes."""
        if self.source is None:
            self.source = open_source(self.config.source, realtime=self.config.realtime, fps=self.config.fps)
        if self.client is not None:
            self.client.wait_ready(min(1000, int(self.config.deadline_ms)))
        last_frame = time.monotonic()
        while not self.stop_event.is_set():
            self.notifier.tick()
            if self._paced():
                # A camera: wait for the next frame in short slices, answering
                # replies and deadlines in between, so a cloud answer is not held
                # back by up to a frame interval.
                try:
                    frame = self.source.read(timeout=self._slice_s())
                except FrameTimeout:
                    yield from self._service(0)
                    if time.monotonic() - last_frame > self._stall_s():
                        raise SourceError(f"{self.config.source}: no frame for {self._stall_s():.1f} s") from None
                    continue
                last_frame = time.monotonic()
            else:
                frame = self.source.read(timeout=self._stall_s())
            if frame is None:
                break
            yield from self._service(0)
            if not self._paced():
                # A file read as fast as it goes has no frame rate to protect: wait
                # for a slot in the window rather than give up on the cloud.
                while len(self._inflight) >= self.config.window:
                    yield from self._service(50)
            yield from self.process(frame)
        # End of input or stop: every frame in flight gets its result by its deadline.
        while self._inflight:
            self.notifier.tick()
            yield from self._service(5)
        self.stats.dropped = self.source.dropped

    def process(self, frame: Frame) -> Iterator[FrameResult]:
        """One frame through the edge stages; yields its result unless it was offloaded."""
        t0 = time.monotonic()
        thresholds = self.controller.thresholds(self._base_thresholds) if self.controller else None
        try:
            x = self.chain.preprocess([frame.image])
            res = self.chain.run_from(0, x, stop_at=self.first_cloud, thresholds=thresholds)
        except JetsplitError as exc:
            # A broken frame (wrong size, corrupt) is reported and skipped, never fatal.
            _log.warning("frame %d: %s", frame.index, exc)
            yield self._finish(FrameResult(frame.index, -1, "", 0.0, "", "fallback",
                                           (time.monotonic() - frame.t_capture) * 1000.0,
                                           truth=frame.truth, t_capture=frame.t_capture,
                                           source_id=frame.source_id, reason=f"bad frame: {exc}"), None, False)
            return
        stage_ms = {self._stage_names[i]: t for i, t in enumerate(res.stage_time_ms) if t}
        gate_thr = None if thresholds is None or self.controller is None or self.controller.gate_stage is None \
            else thresholds[self.controller.gate_stage]
        score = float(res.score[0])
        if res.accepted[0]:
            energy = self.meter.frame_energy_j(t0, time.monotonic(), stage_ms) * 1000.0
            yield self._finish(self._result(frame, res, "edge", energy_mj=energy, threshold=gate_thr), score, False)
            return
        reason = self._why_not_offload()
        if reason is None:
            assert self.client is not None and res.next_stage is not None
            deadline_ms = self.config.deadline_ms - (time.monotonic() - frame.t_capture) * 1000.0
            try:
                tensors = pack(self.bundle, res.next_stage, frame.image, res.carry, res.state)
                rid = self.client.submit(res.next_stage, tensors, deadline_ms=max(deadline_ms, 0.0),
                                         encodings=self._encodings)
            except Unavailable:
                self.breaker.record_failure("unavailable")
                reason = "cloud unavailable"
            else:
                sent = self.client.last_sent_bytes
                energy = self.meter.frame_energy_j(t0, time.monotonic(), stage_ms, sent) * 1000.0
                self._inflight[rid] = _InFlight(frame, res, gate_thr, score,
                                                time.monotonic() + max(deadline_ms, 0.0) / 1000.0, sent, energy)
                self.stats.offloaded += 1
                return
        energy = self.meter.frame_energy_j(t0, time.monotonic(), stage_ms) * 1000.0
        yield self._finish(self._result(frame, res, "fallback", energy_mj=energy, threshold=gate_thr,
                                        reason=reason), score, False)

    def _stall_s(self) -> float:
        return float(getattr(self.source, "stall_timeout_s", 5.0))

    def _slice_s(self) -> float:
        """How long to wait for a frame before looking at replies again."""
        if not self._inflight:
            return 0.05
        soonest = min(p.deadline_at for p in self._inflight.values())
        return min(0.005, max(0.0005, soonest - time.monotonic()))

    def _paced(self) -> bool:
        """True when frames arrive at the source's own rate (camera, realtime file)."""
        return bool(getattr(self.source, "live", False) or self.config.realtime)

    def _why_not_offload(self) -> str | None:
        if self.offload_block is not None:
            return "local only"
        if len(self._inflight) >= self.config.window:
            return "window full"
        if not self.breaker.allow():
            return "circuit open"
        return None

    # -- replies ---------------------------------------------------------------------------
    def _service(self, timeout_ms: int) -> Iterator[FrameResult]:
        if self.client is None or not self._inflight:
            return
        wait = timeout_ms
        if wait:
            soonest = min(p.deadline_at for p in self._inflight.values())
            wait = int(max(0.0, min(timeout_ms / 1000.0, soonest - time.monotonic())) * 1000)
        for reply in self.client.poll_replies(wait):
            pending = self._inflight.pop(reply.id, None)
            if pending is None:
                continue  # already answered by its fallback: exactly one result per frame
            yield self._on_reply(pending, reply)
        now = time.monotonic()
        for rid in self.client.expire(now):
            pending = self._inflight.pop(rid, None)
            if pending is not None:
                self.breaker.record_failure("timeout")
                yield self._fallback(pending, "deadline")
        for rid in [rid for rid, p in self._inflight.items() if p.deadline_at <= now]:
            pending = self._inflight.pop(rid)
            self.breaker.record_failure("timeout")
            yield self._fallback(pending, "deadline")

    def _on_reply(self, pending: _InFlight, reply: Reply) -> FrameResult:
        if self.controller is not None:
            self.controller.observe_congestion(reply.status == StatusCode.OVERLOADED)
        if time.monotonic() > pending.deadline_at:
            # The contract is the cloud's answer *before* the deadline; one that
            # comes later is a fallback like any other, whatever it says.
            self.breaker.record_failure("late")
            return self._fallback(pending, "deadline")
        if reply.ok:
            self.breaker.record_success()
            if self.controller is not None:
                self.controller.observe_round_trip(reply.rtt_ms)
            scores = np.asarray(reply.scores, np.float32)
            if reply.classes is not None:
                class_id = int(reply.classes[0])
                top = float(scores[0])
            else:
                class_id = int(scores.argmax())
                top = float(scores[class_id])
            r = FrameResult(
                frame=pending.frame.index, class_id=class_id, label=self.bundle.labels[class_id], score=top,
                stage=self._stage_names[reply.stage] if reply.stage < len(self._stage_names) else str(reply.stage),
                where="cloud", latency_ms=(time.monotonic() - pending.frame.t_capture) * 1000.0,
                bytes_up=pending.bytes_up, energy_mj=pending.energy_mj, truth=pending.frame.truth,
                t_capture=pending.frame.t_capture, source_id=pending.frame.source_id, threshold=pending.threshold,
            )
            return self._finish(r, pending.score, True)
        if reply.status == StatusCode.UNKNOWN_BUNDLE:
            if not self._mismatch_reported:
                _log.error("the cloud does not serve this bundle (fingerprint %s...): running local only until it does",
                           self.bundle.fingerprint[:12])
                self._mismatch_reported = True
            self.breaker.trip("bundle mismatch", backoff_s=self.config.breaker.max_backoff_s)
            return self._fallback(pending, "bundle mismatch")
        if reply.status == StatusCode.OVERLOADED and self.controller is not None:
            # A worker that refuses at once is up: the controller offloads less
            # (congestion), the breaker need not stop everything.
            self.breaker.record_success()
        elif reply.status in (StatusCode.EXPIRED, StatusCode.OVERLOADED, StatusCode.SHUTTING_DOWN):
            self.breaker.record_failure(reply.status.name.lower())
        else:
            _log.warning("cloud error on frame %d: %s %s", pending.frame.index, reply.status.name, reply.message)
            self.breaker.record_failure("error")
        return self._fallback(pending, reply.status.name.lower())

    # -- results ---------------------------------------------------------------------------
    def _result(self, frame: Frame, res: ChainResult, where: str, energy_mj: float, threshold: float | None,
                reason: str | None = None, bytes_up: int = 0) -> FrameResult:
        class_id = int(res.pred[0])
        return FrameResult(
            frame=frame.index, class_id=class_id, label=self.bundle.labels[class_id],
            score=float(res.probs[0, class_id]), stage=self._stage_names[int(res.stage[0])],
            where=where,  # type: ignore[arg-type]
            latency_ms=(time.monotonic() - frame.t_capture) * 1000.0, bytes_up=bytes_up, energy_mj=energy_mj,
            truth=frame.truth, t_capture=frame.t_capture, source_id=frame.source_id, threshold=threshold,
            reason=reason,
        )

    def _fallback(self, pending: _InFlight, reason: str) -> FrameResult:
        r = self._result(pending.frame, pending.edge, "fallback", pending.energy_mj, pending.threshold,
                         reason=reason, bytes_up=pending.bytes_up)
        return self._finish(r, pending.score, True)

    def _finish(self, result: FrameResult, score: float | None, offloaded: bool) -> FrameResult:
        self.stats.add(result)
        if self.controller is not None and score is not None:
            self.controller.observe_frame(score, offloaded, result.latency_ms, result.bytes_up, result.energy_mj,
                                          threshold=result.threshold,
                                          missed=offloaded and result.where == "fallback")
            self.controller.update()
        return result
