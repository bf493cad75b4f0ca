"""Where the worker pool's members are: endpoint parsing and DNS resolution.

A ``tcp://NAME:port`` endpoint whose host is a name stands for every address the
name resolves to (a Kubernetes headless Service has one per ready pod). Literal
addresses and ``ipc://`` endpoints are members as given.

:func:`resolve_endpoint` asks ``getaddrinfo`` once. :class:`NameWatch` keeps asking,
every ``interval_s``, on a background thread, so a slow DNS server never stalls the
edge loop; it only records what it found, and the pool's own thread applies it
(membership changes happen only on the caller's thread, like everything else in
:class:`~jetsplit.edge.pool.WorkerPool`).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

__all__ = ["NameWatch", "Resolver", "is_dns_endpoint", "resolve_endpoint"]

# One logger for the whole pool (edge/pool/workerpool.py and its parts): what operators filter on.
_log = logging.getLogger("jetsplit.edge.pool")

#: ``resolver("tcp://name:port") -> ["tcp://10.0.0.7:port", ...]``; raises OSError when
#: the name cannot be resolved now (the pool then keeps the members it has).
Resolver = Callable[[str], Sequence[str]]


def _host_port(endpoint: str) -> tuple[str, int] | None:
    """(host, port) of a ``tcp://host:port`` endpoint, else None."""
    if not endpoint.startswith("tcp://"):
        return None
    parts = urlsplit(endpoint)
    try:
        port = parts.port
    except ValueError:
        return None
    if parts.hostname is None or port is None:
        return None
    return parts.hostname, port


def is_dns_endpoint(endpoint: str) -> bool:
    """True for ``tcp://NAME:port`` where NAME is a host name, not an address
    (``*`` and interface names are for binding, never for connecting)."""
    hp = _host_port(endpoint)
    if hp is None:
        return False
    try:
        ipaddress.ip_address(hp[0])
    except ValueError:
        return True
    return False


def resolve_endpoint(endpoint: str) -> list[str]:
    """Every address ``endpoint``'s name resolves to, as ``tcp://`` endpoints
    (IPv6 in brackets), sorted; raises OSError (``socket.gaierror``) on failure."""
    hp = _host_port(endpoint)
    if hp is None:
        return [endpoint]
    host, port = hp
    out: set[str] = set()
    for family, _, _, _, sockaddr in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        addr = str(sockaddr[0])
        out.add(f"tcp://[{addr}]:{port}" if family == socket.AF_INET6 else f"tcp://{addr}:{port}")
    return sorted(out)


class NameWatch:
    """The addresses of ``names``, looked up by :meth:`resolve` and then every
    ``interval_s`` on a background thread once :meth:`start` is called.

    :meth:`take`, on the pool's thread, returns the latest addresses after each round
    of look-ups (a name whose look-up failed keeps the addresses it had, or has none
    yet). :meth:`stop` ends the thread.
    """

    def __init__(self, names: Sequence[str], resolver: Resolver, interval_s: float) -> None:
        self.names = list(names)
        self.interval_s = interval_s
        self._resolver = resolver
        # The thread writes here, the pool's thread reads.
        self._lock = threading.Lock()
        self._resolved: dict[str, list[str]] = {}
        self._resolved_gen = 0
        self._taken_gen = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def resolve(self) -> None:
        """One round of look-ups, on the calling thread."""
        results: dict[str, list[str]] = {}
        for name in self.names:
            try:
                results[name] = sorted(set(self._resolver(name)))
            except OSError as exc:
                # A DNS blip must not empty the pool: keep what we have.
                _log.warning("worker pool: cannot resolve %s (%s); keeping its members", name, exc)
        with self._lock:
            self._resolved.update(results)
            self._resolved_gen += 1

    def start(self) -> None:
        """Re-resolve every ``interval_s`` on a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="jetsplit-pool-dns", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.resolve()
            except Exception:  # a resolver bug must not end re-resolution silently
                _log.exception("worker pool: resolver failed")

    def take(self) -> dict[str, list[str]] | None:
        """Each name's addresses if a round of look-ups ended since the last call, else None."""
        with self._lock:
            if self._resolved_gen == self._taken_gen:
                return None
            self._taken_gen = self._resolved_gen
            return {k: list(v) for k, v in self._resolved.items()}

    def stop(self) -> None:
        """End the thread (waiting for a look-up in progress, up to 5 s)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
