"""Binding a ZeroMQ socket to an endpoint, with a failure an operator can act on.

libzmq reports a failed bind as ``Address already in use`` or ``No such file or
directory`` without the endpoint, let alone which directory is missing. The
worker's ROUTER and the edge's ``zmq-pub`` sink bind through :func:`bind`, which
raises :class:`~jetsplit.errors.ConfigError` with one line naming the endpoint and
the cause::

    cannot bind ipc:///run/jetsplit/results: directory /run/jetsplit does not exist
    (systemd creates it for the service with RuntimeDirectory=; elsewhere create it
    or bind another path)
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Any

import zmq

from jetsplit.errors import ConfigError

__all__ = ["bind", "bind_failure"]


def bind_failure(endpoint: str, exc: zmq.ZMQError) -> str:
    """Why binding ``endpoint`` failed with ``exc``, in one line."""
    if exc.errno == errno.EADDRINUSE:
        return (f"cannot bind {endpoint}: address already in use (another process listens there: "
                "stop it, or choose another endpoint)")
    if exc.errno == errno.EADDRNOTAVAIL:
        return (f"cannot bind {endpoint}: no interface of this host has that address (bind 0.0.0.0 for all of "
                "them, or one that `ip -brief address` lists)")
    if endpoint.startswith("ipc://"):
        path = Path(endpoint.removeprefix("ipc://"))
        if not path.parent.is_dir():
            return (f"cannot bind {endpoint}: directory {path.parent} does not exist (systemd creates it for the "
                    "service with RuntimeDirectory=; elsewhere create it or bind another path)")
    if exc.errno == errno.EACCES:
        return f"cannot bind {endpoint}: permission denied (run as a user that may, or bind another endpoint)"
    return f"cannot bind {endpoint}: {zmq.strerror(exc.errno) if exc.errno is not None else exc}"


def _port_out_of_range(endpoint: str) -> str | None:
    if not endpoint.startswith("tcp://"):
        return None
    port = endpoint.rsplit(":", 1)[-1]
    # libzmq takes a port above 65535 modulo 65536: it would listen somewhere else.
    if port.isdigit() and int(port) > 65535:
        return f"cannot bind {endpoint}: port {port} is out of range (0-65535)"
    return None


def bind(sock: zmq.Socket[Any], endpoint: str) -> None:
    """``sock.bind(endpoint)``; a failure is a :class:`ConfigError` saying why."""
    if (bad := _port_out_of_range(endpoint)) is not None:
        raise ConfigError(bad)
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(bind_failure(endpoint, exc)) from None
