"""What a client hands its caller: :class:`Reply` (a ``result`` or an ``error``)
and :class:`PingReply` (a ``pong``), and :func:`reply_for`, which makes a Reply
from a decoded message."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import RemoteError, StatusCode
from .messages import ErrorReply, Message, Result

__all__ = ["PingReply", "Reply", "reply_for"]

_log = logging.getLogger("jetsplit.protocol.client")


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to one ``infer`` request, success or error.

    ``scores`` are float32 class scores; ``classes`` is None when they cover every
    class in order, else the class id of each score (top-k, best first).
    ``rtt_ms`` is measured by the client from send to receipt.
    """

    id: int
    status: StatusCode
    message: str = ""
    stage: int = -1
    scores: np.ndarray[Any, Any] = field(default_factory=lambda: np.zeros(0, np.float32))
    classes: np.ndarray[Any, Any] | None = None
    queue_ms: float = 0.0
    compute_ms: float = 0.0
    rtt_ms: float = 0.0
    tensors: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True for a ``result``."""
        return self.status == StatusCode.OK

    @property
    def top1(self) -> int:
        """The best class id (-1 when there are no scores)."""
        if self.scores.size == 0:
            return -1
        best = int(np.argmax(self.scores))
        return int(self.classes[best]) if self.classes is not None else best

    def raise_for_status(self) -> Reply:
        """Return self if ok, else raise :class:`RemoteError`."""
        if not self.ok:
            raise RemoteError(self.status, self.message, self.id)
        return self


@dataclass(frozen=True)
class PingReply:
    """A server's ``pong``: who it is, which bundles it serves, the round trip,
    whether it takes new work (``state``: ``serving`` or ``draining``) and how many
    requests it holds (``load``)."""

    server: str
    bundles: list[str]
    max_message_bytes: int
    rtt_ms: float
    state: str = "serving"
    load: int = 0


def reply_for(msg: Message, tensors: dict[str, np.ndarray[Any, Any]], rtt_ms: float) -> Reply | None:
    """The :class:`Reply` a ``result`` or ``error`` message makes; None for other kinds."""
    if type(msg) is Result:
        return Reply(
            id=msg.id,
            status=StatusCode.OK,
            stage=msg.stage,
            scores=np.asarray(msg.scores, dtype=np.float32),
            classes=None if msg.classes is None else np.asarray(msg.classes, dtype=np.int64),
            queue_ms=msg.queue_ms,
            compute_ms=msg.compute_ms,
            rtt_ms=rtt_ms,
            tensors=tensors,
        )
    if type(msg) is ErrorReply:
        try:
            status = StatusCode(msg.status)
        except ValueError:
            status = StatusCode.INTERNAL  # a newer server's code we do not know
        return Reply(id=msg.id, status=status, message=msg.message, rtt_ms=rtt_ms)
    _log.warning("dropped an unexpected %s message", type(msg).__name__)
    return None
