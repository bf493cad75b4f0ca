"""Secure by default: who may talk in plaintext (SPEC.md section 8).

A worker that listens on an address other than loopback without CURVE serves
anyone who can reach it, and an edge that sends frames or activations to such a
worker puts them on the network in plaintext. Both refuse to start that way unless
the operator says ``--insecure`` (``insecure = true``); then they log a warning.

Loopback: ``127.0.0.0/8``, ``::1``, the name ``localhost``, and ``ipc://`` and
``inproc://`` endpoints (never on a network). Any other host, a wildcard (``*``,
``0.0.0.0``), an interface name or a DNS name counts as reachable: a name is not
resolved here, since what it resolves to can change.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence

from jetsplit.errors import ConfigError

__all__ = ["check_client", "check_server", "is_loopback"]

_log = logging.getLogger(__name__)


def is_loopback(endpoint: str) -> bool:
    """True if ``endpoint`` cannot be reached from another machine."""
    scheme, _, rest = endpoint.partition("://")
    if scheme in ("ipc", "inproc"):
        return True
    # tcp://HOST:PORT, tcp://[V6]:PORT, tcp://SRC;HOST:PORT (a source address first)
    host = rest.rpartition(";")[2].rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _exposed(endpoints: Sequence[str]) -> list[str]:
    return [ep for ep in endpoints if not is_loopback(ep)]


def check_server(bind: Sequence[str], curve: bool, insecure: bool) -> None:
    """Refuse a worker that would serve in plaintext beyond loopback (ConfigError,
    one line); with ``insecure``, log a warning instead."""
    exposed = _exposed(bind)
    if curve or not exposed:
        return
    if insecure:
        _log.warning("serving %s WITHOUT CURVE (--insecure): anyone who can reach it may use this worker, "
                     "and frames cross the network in plaintext", ", ".join(exposed))
        return
    raise ConfigError(
        f"bind: {', '.join(exposed)} is not a loopback address and no CURVE keys are set, so anyone who can "
        "reach it could use this worker and read the frames; provision keys (jetsplit keys generate "
        "/etc/jetsplit/keys --name worker, then copy each edge's .key into an allow directory) and pass "
        "--curve-secret/--curve-allow ([curve] secret/allow), or pass --insecure (insecure = true) to serve "
        "in plaintext")


def check_client(cloud: Sequence[str], curve: bool, insecure: bool, what: str = "frames or activations") -> None:
    """Refuse an edge that would send ``what`` in plaintext beyond loopback
    (ConfigError, one line); with ``insecure``, log a warning instead."""
    exposed = _exposed(cloud)
    if curve or not exposed:
        return
    if insecure:
        _log.warning("sending %s to %s WITHOUT CURVE (--insecure): they cross the network in plaintext",
                     what, ", ".join(exposed))
        return
    raise ConfigError(
        f"cloud: {', '.join(exposed)} is not a loopback address and no CURVE keys are set, so {what} would "
        "cross the network in plaintext; provision keys (jetsplit keys generate /etc/jetsplit/keys --name edge, "
        "and get the worker's .key) and pass --curve-secret/--curve-server-key ([curve] secret/server_key), "
        "or pass --insecure (insecure = true) to send in plaintext")
