"""The pool's counters: the bottom of the ``edge/pool`` package.

:class:`PoolStats` imports nothing from the package, so the in-flight table and the
membership can both count into it without a type-level import cycle back to
:class:`~jetsplit.edge.pool.WorkerPool`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PoolStats"]


@dataclass
class PoolStats:
    """What the pool did, for logs, tests and benchmarks."""

    submitted: int = 0
    replies: int = 0
    expired: int = 0
    resent: int = 0
    abandoned: int = 0  # lost with a member and not re-sendable: reported by expire() at once
    duplicates: int = 0  # replies dropped because the request was already answered
    member_downs: int = 0
    joins: int = 0
    leaves: int = 0
