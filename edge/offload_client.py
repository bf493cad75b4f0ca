"""What the edge agent needs from the client that carries its offloads.

The agent sends each offloaded frame with :meth:`~OffloadClient.submit` and learns
how it ended from :meth:`~OffloadClient.poll_replies` and
:meth:`~OffloadClient.expire`: every id ends exactly once, as a reply or as an
expired id. Two classes satisfy :class:`OffloadClient`: a plain
:class:`~jetsplit.protocol.Client` (one worker, or fixed endpoints round-robin) and
the :class:`~jetsplit.edge.pool.WorkerPool` (many workers, health checked). mypy
checks both against it (``_both_satisfy`` below, and the agent's own assignment).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jetsplit.protocol.client import Reply
from jetsplit.protocol.codec import Encodings

if TYPE_CHECKING:
    from jetsplit.edge.pool import WorkerPool
    from jetsplit.protocol import Client

__all__ = ["OffloadClient"]


class OffloadClient(Protocol):
    """The edge agent's view of a client of cloud workers (one thread uses it)."""

    @property
    def last_sent_bytes(self) -> int:
        """Bytes the last :meth:`submit` put on the wire, header included."""
        ...

    def submit(
        self,
        stage: int,
        tensors: Mapping[str, np.ndarray[Any, Any]],
        deadline_ms: float,
        *,
        encodings: Encodings = None,
        top_k: int | None = None,
    ) -> int:
        """Send an ``infer`` request without waiting; its id. ``Unavailable`` when
        no worker can take it."""
        ...

    def poll_replies(self, timeout_ms: int = 0) -> list[Reply]:
        """Replies that have arrived, waiting up to ``timeout_ms`` for the first."""
        ...

    def expire(self, now: float | None = None) -> list[int]:
        """Ids that will not be answered (past their deadline, or lost)."""
        ...

    def wait_ready(self, timeout_ms: int | None = None) -> bool:
        """Wait until a worker can take a request (True) or the timeout passes."""
        ...

    def close(self) -> None: ...


if TYPE_CHECKING:

    def _both_satisfy(client: Client, pool: WorkerPool) -> tuple[OffloadClient, OffloadClient]:
        return client, pool  # mypy fails here if either drifts from the protocol
