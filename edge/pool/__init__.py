"""jetsplit.edge.pool: spreading offloads over several cloud workers.

One role per module, from the bottom up (each imports only those above it):

- ``stats``: :class:`PoolStats`, the counters every part writes to;
- ``resolver``: endpoints and DNS names, resolved in a background thread;
- ``members``: one worker's ``Client`` with its health signals;
- ``inflight``: the table in which every request ends exactly once;
- ``membership``: who is in the pool, who is up, who takes the next request;
- ``workerpool``: :class:`WorkerPool`, the facade the edge agent uses.
"""

from __future__ import annotations

from jetsplit.edge.pool.members import MemberState
from jetsplit.edge.pool.membership import PoolConfig
from jetsplit.edge.pool.resolver import Resolver, is_dns_endpoint, resolve_endpoint
from jetsplit.edge.pool.stats import PoolStats
from jetsplit.edge.pool.workerpool import WorkerPool

__all__ = [
    "MemberState", "PoolConfig", "PoolStats", "Resolver", "WorkerPool", "is_dns_endpoint", "resolve_endpoint",
]
