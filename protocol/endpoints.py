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
    if endpoint.startswith("ipc://"):
        path = Path(endpoint.removeprefix("ipc://"))
        if not path.parent.is_dir():
            return (f"cannot bind {endpoint}: directory {path.parent} does not exist (systemd creates it for the "
                    "service with RuntimeDirectory=; elsewhere create it or bind another path)")
    if exc.errno == errno.EACCES:
        return f"cannot bind {endpoint}: permission denied (run as a user that may, or bind another endpoint)"
    return f"cannot bind {endpoint}: {exc.strerror}"


def bind(sock: zmq.Socket[Any], endpoint: str) -> None:
    """``sock.bind(endpoint)``; a failure is a :class:`ConfigError` saying why."""
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as exc:
        raise ConfigError(bind_failure(endpoint, exc)) from None
