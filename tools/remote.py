"""What the commands that talk to a worker share: its endpoint and CURVE keys.

``jetsplit describe`` and ``jetsplit conformance`` take one ``ENDPOINT`` and,
for a worker that requires CURVE, the edge's secret key file and the worker's
public key file (SPEC.md section 8).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jetsplit.errors import ConfigError
from jetsplit.protocol import CurveClient

__all__ = ["add_remote_args", "check_endpoint", "curve_from_args"]


def add_remote_args(parser: argparse.ArgumentParser) -> None:
    """ENDPOINT, --timeout-ms, --curve-secret and --curve-server-key."""
    parser.add_argument("endpoint", metavar="ENDPOINT", help="the worker, e.g. tcp://worker:5555")
    parser.add_argument("--timeout-ms", type=int, default=3000, help="wait for each answer (default 3000)")
    parser.add_argument("--curve-secret", help="this client's CURVE secret key file (NAME.key_secret)")
    parser.add_argument("--curve-server-key", help="the worker's CURVE public key file (NAME.key)")


def check_endpoint(endpoint: str) -> str:
    """``endpoint`` if it looks like a ZeroMQ endpoint a client can connect to."""
    scheme, sep, rest = endpoint.partition("://")
    if not sep or scheme not in ("tcp", "ipc", "inproc") or not rest or "*" in rest:
        raise ConfigError(f"ENDPOINT: expected an endpoint such as tcp://worker:5555 or ipc:///run/jetsplit/worker.sock, "
                          f"got {endpoint!r}")
    if scheme == "tcp" and not rest.rpartition(":")[2].isdigit():
        raise ConfigError(f"ENDPOINT: expected tcp://HOST:PORT with a numeric port, got {endpoint!r}")
    return endpoint


def curve_from_args(args: argparse.Namespace) -> CurveClient | None:
    """The CURVE settings named by the flags (both or neither), files checked."""
    if (args.curve_secret is None) != (args.curve_server_key is None):
        raise ConfigError("curve: expected both --curve-secret and --curve-server-key, got one")
    if args.curve_secret is None:
        return None
    for flag, value in (("--curve-secret", args.curve_secret), ("--curve-server-key", args.curve_server_key)):
        if not Path(value).is_file():
            raise ConfigError(f"{flag}: no such file {value!r}")
    return CurveClient(Path(args.curve_secret), Path(args.curve_server_key))
