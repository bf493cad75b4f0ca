"""Open-loop load on a cloud worker from many edges, each with a window, and the
accounting that says whether every request got exactly one answer.

Requests arrive as a Poisson process at ``rate`` per second whether or not the
worker keeps up (open loop: a camera does not wait for the cloud), spread
round-robin over ``edges`` DEALER connections. An edge with ``window`` requests
in flight does not send the next one: it counts it ``window_full`` (the agent
answers that frame locally). Each request is the same pre-encoded tensors under a
fresh id and ``deadline_ms``; only the header is encoded per request, so one
Python thread offers tens of thousands of requests a second.

Every request sent ends exactly once, as one of: ``ok`` (answered before its
deadline), ``overloaded``, ``expired``, another error status, or a client-side
``timeout`` (nothing by its deadline, as the edge agent gives up). A reply that
comes after its timeout is counted ``late`` and a second reply to one id
``duplicate``; neither is a second answer.

With ``rate = 0`` the load is closed-loop instead: every edge keeps its window
full, sending again as each answer comes (the way to measure capacity).

Used by bench/overload.py and the overload system tests, and from a shell
against any worker::

    $ python -m jetsplit.cloud.loadgen tcp://127.0.0.1:5555 --bundle demo:split --rate 20000 --seconds 5

    >>> load = Load(endpoint, fingerprint, stage, {"carry": carry}, encodings="f16")  # doctest: +SKIP
    >>> tally = load.run(rate=20_000, seconds=5, edges=64, window=32, deadline_ms=150)  # doctest: +SKIP
    >>> tally.goodput, tally.p99_ok_ms, tally.unanswered                              # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import msgspec
import numpy as np
import zmq

from jetsplit.bundle import Bundle, load_bundle
from jetsplit.errors import JetsplitError
from jetsplit.handoff import wire_encodings
from jetsplit.protocol.codec import Encodings, decode_header, encode_header, encode_infer
from jetsplit.protocol.errors import StatusCode, Unavailable
from jetsplit.protocol.messages import ErrorReply, InferRequest, Result
from jetsplit.protocol.sockio import recv_parts, send_parts
from jetsplit.protocol.transport import dealer_socket

__all__ = ["Load", "Tally", "main", "offload_sample"]


def offload_sample(bundle: Bundle, n: int) -> tuple[int, list[dict[str, np.ndarray[Any, Any]]], Any]:
    """What an edge sends for the first ``n`` test digits with every frame
    offloaded: the stage the cloud resumes at, each frame's hand-off tensors,
    and the frames (real data shipped with scikit-learn)."""
    from jetsplit.chain import Chain
    from jetsplit.datasets import load_dataset
    from jetsplit.handoff import pack

    frames = load_dataset("digits", "test").images[:n]
    with Chain.open(bundle, where="edge") as edge:
        res = edge.run_from(0, edge.preprocess(frames), stop_at=edge.first_cloud,
                            thresholds=[float("inf")] * len(bundle.stages))
    if res.next_stage is None or res.next_stage != edge.first_cloud:
        raise ValueError(f"bundle {bundle.name!r}: nothing is offloaded after its edge stages")
    tensors = [pack(bundle, res.next_stage, frames[i], None if res.carry is None else res.carry[i:i + 1],
                    None if res.state is None else res.state.take(np.array([i])))
               for i in range(n)]
    return res.next_stage, tensors, frames


@dataclass
class Tally:
    """What a run of :meth:`Load.run` offered, sent and got back (counts, ms)."""

    seconds: float = 0.0
    started: float = 0.0  # time.monotonic() when the window began (comparable between processes here)
    offered: int = 0  # arrivals in the window (sent + window_full + unsent)
    sent: int = 0
    window_full: int = 0  # arrivals an edge did not send: its window was full
    unsent: int = 0  # the socket would not take it (no connection, or its queue full)
    behind: int = 0  # arrivals due in the window the generator could not send by its end (CPU-starved)
    ok: int = 0
    overloaded: int = 0
    expired: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # other statuses
    timeouts: int = 0  # nothing by the deadline
    late: int = 0  # replies after their request timed out (not answers)
    late_ok: int = 0  # of which results: requests the worker accepted and answered too late
    duplicates: int = 0  # second replies to one id (must stay 0)
    ok_ms: list[float] = field(default_factory=list, repr=False)
    shed_ms: list[float] = field(default_factory=list, repr=False)  # round trips of OVERLOADED replies
    late_ok_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def answered(self) -> int:
        return self.ok + self.overloaded + self.expired + sum(self.errors.values())

    @property
    def unanswered(self) -> int:
        """Requests sent that neither got an answer nor timed out (0 after a run)."""
        return self.sent - self.answered - self.timeouts

    @property
    def goodput(self) -> float:
        """``ok`` answers per second of the window."""
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    @property
    def offered_rate(self) -> float:
        return self.offered / self.seconds if self.seconds > 0 else 0.0

    def quantile_ms(self, values: list[float], q: float) -> float | None:
        return float(np.quantile(values, q)) if values else None

    @property
    def p99_ok_ms(self) -> float | None:
        return self.quantile_ms(self.ok_ms, 0.99)

    @property
    def p99_accepted_ms(self) -> float | None:
        """p99 round trip of every result, in time or not: the latency of what the
        worker accepted (its refusals are not in it)."""
        return self.quantile_ms(self.ok_ms + self.late_ok_ms, 0.99)

    def summary(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k not in ("ok_ms", "shed_ms", "late_ok_ms")}
        out.update(answered=self.answered, unanswered=self.unanswered, goodput=round(self.goodput, 1),
                   offered_rate=round(self.offered_rate, 1),
                   ok_p50_ms=self.quantile_ms(self.ok_ms, 0.5), ok_p99_ms=self.p99_ok_ms,
                   accepted_p99_ms=self.p99_accepted_ms,
                   shed_p50_ms=self.quantile_ms(self.shed_ms, 0.5), shed_p99_ms=self.quantile_ms(self.shed_ms, 0.99))
        return out


class Load:
    """A load generator for one worker and one (bundle, stage): see the module
    docstring. Owns its sockets; one thread."""

    def __init__(self, endpoint: str, fingerprint: str, stage: int, tensors: Mapping[str, np.ndarray[Any, Any]],
                 encodings: Encodings = None, seed: int = 0) -> None:
        frames = encode_infer(1, fingerprint, stage, 1000.0, tensors, encodings)
        header = decode_header(frames[0])
        assert isinstance(header, InferRequest)
        self._template = header
        self._payloads = [bytes(f) for f in frames[1:]]
        self.endpoint = endpoint
        self._rng = random.Random(seed)
        self._next_id = 0

    def run(self, rate: float, seconds: float, edges: int, window: int, deadline_ms: float,
            connect_timeout_s: float = 10.0) -> Tally:
        """Offer ``rate`` requests/s (0: closed loop) for ``seconds`` over ``edges``
        connections of ``window`` each; then wait out the requests in flight
        (their deadline)."""
        ctx: zmq.Context[Any] = zmq.Context()
        socks = [dealer_socket(ctx, [self.endpoint]) for _ in range(edges)]
        try:
            self._wait_connected(socks, connect_timeout_s)
            return self._run(socks, rate, seconds, window, deadline_ms)
        finally:
            for s in socks:
                s.close(linger=0)
            ctx.term()

    def _wait_connected(self, socks: list[zmq.Socket[Any]], timeout_s: float) -> None:
        # ZMQ_IMMEDIATE: a DEALER is writable once its connection is up.
        end = time.monotonic() + timeout_s
        for s in socks:
            if not s.poll(max(1, int((end - time.monotonic()) * 1000)), zmq.POLLOUT):
                raise Unavailable(f"{self.endpoint}: no connection within {timeout_s:g} s (is a worker serving there?)")

    def _run(self, socks: list[zmq.Socket[Any]], rate: float, seconds: float, window: int,
             deadline_ms: float) -> Tally:
        tally = Tally()
        edges = len(socks)
        in_flight = [0] * edges
        state: dict[int, tuple[int, float]] = {}  # id -> (edge, sent_at), while pending
        ended: dict[int, float] = {}  # id -> -1 once answered, its send time once timed out
        timeline: collections.deque[tuple[float, int]] = collections.deque()  # (timeout_at, id), in send order
        poll_items = [(s, zmq.POLLIN) for s in socks]
        which = {s: i for i, s in enumerate(socks)}
        deadline_s = deadline_ms / 1000.0
        template, payloads = self._template, self._payloads
        replace, expovariate = msgspec.structs.replace, self._rng.expovariate
        closed = rate <= 0
        start = tally.started = time.monotonic()
        end = start + seconds
        next_arrival = start if closed else start + expovariate(rate)
        turn = 0
        while True:
            now = time.monotonic()
            if now >= end and next_arrival < end:
                # Still behind at the end: what was due is not offered late.
                while not closed and next_arrival < end:
                    tally.behind += 1
                    next_arrival += expovariate(rate)
                next_arrival = end + 1.0
            if closed:
                # Closed loop: an arrival for every free slot.
                free = sum(window - n for n in in_flight) if now < end else 0
                next_arrival = now if free else end + 1.0
            # Arrivals due (a bounded number per turn, so replies are read too).
            for _ in range(256):
                if next_arrival > now or next_arrival >= end:
                    break
                if closed:
                    free -= 1
                    next_arrival = now if free > 0 else end + 1.0
                    while in_flight[turn] >= window:
                        turn = (turn + 1) % edges
                else:
                    next_arrival += expovariate(rate)
                tally.offered += 1
                e = turn
                turn = (turn + 1) % edges
                if in_flight[e] >= window:
                    tally.window_full += 1
                    continue
                self._next_id += 1
                rid = self._next_id
                header = encode_header(replace(template, id=rid, deadline_ms=deadline_ms))
                if not send_parts(socks[e], [header, *payloads]):
                    tally.unsent += 1
                    continue
                sent_at = time.monotonic()
                tally.sent += 1
                in_flight[e] += 1
                state[rid] = (e, sent_at)
                timeline.append((sent_at + deadline_s, rid))
            now = time.monotonic()
            # Client-side timeouts, as the edge agent gives up at the deadline.
            while timeline and timeline[0][0] <= now:
                _, rid = timeline.popleft()
                pending = state.pop(rid, None)
                if pending is not None:
                    in_flight[pending[0]] -= 1
                    ended[rid] = pending[1]
                    tally.timeouts += 1
            if now >= end and not state:
                break
            wait_ms = 0 if next_arrival <= now else max(0, min(1, int((next_arrival - now) * 1000)))
            if now >= end:
                wait_ms = 1
            for sock, _ in zmq.zmq_poll(poll_items, wait_ms):
                self._receive(sock, which[sock], state, ended, in_flight, tally)
        tally.seconds = seconds
        return tally

    @staticmethod
    def _receive(sock: zmq.Socket[Any], e: int, state: dict[int, tuple[int, float]], ended: dict[int, float],
                 in_flight: list[int], tally: Tally) -> None:
        while (frames := recv_parts(sock)) is not None:
            now = time.monotonic()
            msg = decode_header(frames[0].buffer)
            rid = msg.id
            pending = state.pop(rid, None)
            if pending is None:
                sent_at = ended.get(rid, -1.0)
                if sent_at < 0:
                    tally.duplicates += 1
                    continue
                ended[rid] = -1.0
                tally.late += 1
                if type(msg) is Result:
                    tally.late_ok += 1
                    tally.late_ok_ms.append((now - sent_at) * 1000.0)
                continue
            in_flight[pending[0]] -= 1
            ended[rid] = -1.0
            ms = (now - pending[1]) * 1000.0
            if type(msg) is Result:
                tally.ok += 1
                tally.ok_ms.append(ms)
            elif type(msg) is ErrorReply:
                if msg.status == StatusCode.OVERLOADED:
                    tally.overloaded += 1
                    tally.shed_ms.append(ms)
                elif msg.status == StatusCode.EXPIRED:
                    tally.expired += 1
                else:
                    name = StatusCode(msg.status).name.lower() if msg.status in StatusCode._value2member_map_ \
                        else str(msg.status)
                    tally.errors[name] = tally.errors.get(name, 0) + 1
            else:
                tally.errors["unexpected"] = tally.errors.get("unexpected", 0) + 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jetsplit.cloud.loadgen ENDPOINT --bundle B ...``: one run, its
    tally as one JSON line on stdout."""
    p = argparse.ArgumentParser(prog="python -m jetsplit.cloud.loadgen", description=__doc__.split("\n")[0])
    p.add_argument("endpoint")
    p.add_argument("--bundle", required=True, help="the bundle the worker serves (its edge stages make the requests)")
    p.add_argument("--rate", type=float, default=0.0, help="requests/s offered (0: closed loop)")
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--edges", type=int, default=64)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--deadline-ms", type=float, default=150.0)
    args = p.parse_args(argv)
    try:
        bundle = load_bundle(args.bundle)
        stage, tensors, _ = offload_sample(bundle, 1)
        load = Load(args.endpoint, bundle.fingerprint, stage, tensors[0], encodings=wire_encodings(bundle))
        tally = load.run(args.rate, args.seconds, args.edges, args.window, args.deadline_ms)
    except (JetsplitError, ValueError, zmq.ZMQError) as exc:
        print(f"loadgen: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(tally.summary()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
