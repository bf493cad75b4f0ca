"""The worker pool's requests in flight, each of which ends exactly once.

Callers see only the pool's own request ids. A request is sent to one member and
perhaps re-sent, once, to another; each attempt is routed back by the member's own
request id (``Member.routes``: member id -> pool id). The request leaves the table
exactly once: answered (:meth:`InFlight.deliver`; a later reply, such as the first
worker's after a re-send, then finds nothing and is a duplicate), lost with no
re-send possible (:meth:`InFlight.abandon`, reported at once by the pool's next
``expire``), or past its deadline (:meth:`InFlight.expire`). Which member a request goes to, and
whether it is re-sent, is the pool's decision (edge/pool/workerpool.py).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from jetsplit.edge.pool.members import Member
from jetsplit.edge.pool.stats import PoolStats
from jetsplit.protocol.client import Reply
from jetsplit.protocol.codec import Encodings

__all__ = ["InFlight", "Request"]


@dataclass
class Request:
    id: int
    stage: int
    tensors: Mapping[str, np.ndarray[Any, Any]]  # kept for a re-send
    encodings: Encodings
    top_k: int | None
    sent_at: float
    deadline_at: float
    member: Member | None = None
    member_rid: int = -1
    attempts: int = 0

    def route(self, m: Member, member_rid: int) -> None:
        """Record an attempt: the request went to ``m`` as its request ``member_rid``."""
        self.member, self.member_rid = m, member_rid
        self.attempts += 1
        m.routes[member_rid] = self.id


class InFlight:
    """The pool's requests neither answered nor reported, by pool id; the replies
    delivered and the ids abandoned, until the pool hands them out."""

    def __init__(self, stats: PoolStats) -> None:
        self.stats = stats
        self._requests: dict[int, Request] = {}
        self._ready: list[Reply] = []
        self._abandoned: list[int] = []
        self._next_id = 0

    def __len__(self) -> int:
        return len(self._requests)

    def new(self, stage: int, tensors: Mapping[str, np.ndarray[Any, Any]], deadline_ms: float,
            encodings: Encodings, top_k: int | None) -> Request:
        """A request with the next pool id, sent now; :meth:`add` it once it is sent."""
        now = time.monotonic()
        self._next_id = (self._next_id + 1) % (2**63)
        return Request(self._next_id, stage, tensors, encodings, top_k, now, now + max(0.0, deadline_ms) / 1000.0)

    def add(self, req: Request) -> None:
        self._requests[req.id] = req
        self.stats.submitted += 1

    def get(self, pid: int) -> Request | None:
        """The request with pool id ``pid``, or None once it has ended."""
        return self._requests.get(pid)

    def deliver(self, req: Request, reply: Reply, now: float) -> None:
        """``reply`` is the request's answer: it ends, and the caller gets the reply
        under the pool's id."""
        del self._requests[req.id]
        self._ready.append(dataclasses.replace(reply, id=req.id, rtt_ms=(now - req.sent_at) * 1000.0))
        self.stats.replies += 1

    def abandon(self, req: Request) -> None:
        """The request was lost and cannot be re-sent: it ends, reported by the next :meth:`expire`."""
        del self._requests[req.id]
        self._abandoned.append(req.id)
        self.stats.abandoned += 1

    @property
    def has_replies(self) -> bool:
        return bool(self._ready)

    def take_replies(self) -> list[Reply]:
        """The replies delivered since the last call."""
        out, self._ready = self._ready, []
        return out

    def take_abandoned(self) -> list[int]:
        """The ids abandoned since the last call."""
        out, self._abandoned = self._abandoned, []
        return out

    def due(self, t: float) -> list[Request]:
        """The requests whose deadline is ``t`` or earlier."""
        return [r for r in self._requests.values() if r.deadline_at <= t]

    def expire(self, req: Request) -> None:
        """The request's deadline has passed: it ends (the caller reports its id)."""
        del self._requests[req.id]
        self.stats.expired += 1
