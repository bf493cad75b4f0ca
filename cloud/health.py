"""Health probe of one cloud worker: a protocol ``ping``, answered by a ``pong``.

    python -m jetsplit.cloud.health tcp://127.0.0.1:5555 [--fingerprint FP ...]
                                    [--timeout-ms N]
                                    [--curve-secret FILE --curve-server-key FILE]

Exit status 0 when the worker answers within the timeout and its ``pong`` lists
every ``--fingerprint`` given; 1 when it does not answer, answers something else,
or lacks a fingerprint; 2 for a usage error. A ``--fingerprint`` is the bundle's
SHA-256, or its first 8 or more hex digits as other commands print it. One line on stdout says which, so a
Kubernetes exec probe (readiness and liveness) shows the reason in its events.

The probe speaks the wire protocol itself rather than reading a port or the
metrics page, so "healthy" means what an edge needs: the ROUTER socket accepts a
connection, the serving loop reads and answers, and the bundle is loaded. A worker
that requires CURVE answers only allowed keys, so the probe then needs a client key
of its own that is in the worker's allow-list (``--curve-secret``) and the
worker's public key (``--curve-server-key``).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import zmq

from jetsplit.errors import JetsplitError
from jetsplit.protocol import Client, CurveClient, ProtocolError
from jetsplit.protocol.errors import RequestTimeout

__all__ = ["HEALTHY", "UNHEALTHY", "USAGE", "main", "probe"]

HEALTHY = 0
_FINGERPRINT = re.compile(r"[0-9a-fA-F]{8,64}(\.\.\.)?")
UNHEALTHY = 1
USAGE = 2


def probe(endpoint: str, fingerprints: Sequence[str] = (), timeout_ms: int = 1000,
          curve: CurveClient | None = None) -> tuple[bool, str]:
    """Ping ``endpoint`` once; return (healthy, one line saying why)."""
    try:
        with Client(endpoint, fingerprints[0] if fingerprints else "", timeout_ms, curve=curve) as client:
            pong = client.ping(timeout_ms)
    except RequestTimeout as exc:
        # A CURVE worker does not answer a plain client, nor a key it does not allow:
        # silence is all the probe gets, so say what silence may mean.
        hint = ("is the probe's key in the worker's allow-list, and --curve-server-key the worker's key?"
                if curve is not None else
                "if the worker requires CURVE, pass --curve-secret and --curve-server-key")
        return False, f"unhealthy {endpoint}: {exc} (no answer: {hint})"
    except (ProtocolError, zmq.ZMQError) as exc:  # an endpoint zmq refuses
        return False, f"unhealthy {endpoint}: {exc}"
    # Other commands print fingerprints shortened (``3f2a9c1b7d4e...``): a prefix names one too.
    missing = [fp for fp in fingerprints if not any(b.startswith(fp.rstrip(".").lower()) for b in pong.bundles)]
    if missing:
        return False, (f"unhealthy {endpoint}: bundle {', '.join(missing)} not served "
                       f"(serves {', '.join(pong.bundles) or 'none'})")
    return True, (f"healthy {endpoint}: {pong.server}, {pong.state}, load {pong.load}, {len(pong.bundles)} bundle(s), "
                  f"rtt {pong.rtt_ms:.2f} ms")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m jetsplit.cloud.health",
                                description="ping a jetsplit cloud worker; exit 0 if it answers")
    p.add_argument("endpoint", help="the worker's endpoint, e.g. tcp://127.0.0.1:5555")
    p.add_argument("--fingerprint", action="append", default=[],
                   help="a bundle fingerprint the worker must serve, or its first 8+ hex digits (repeatable)")
    p.add_argument("--timeout-ms", type=int, default=1000, help="longest wait for the pong (default 1000)")
    p.add_argument("--curve-secret", type=Path, help="the probe's CURVE secret key file (an allowed client)")
    p.add_argument("--curve-server-key", type=Path, help="the worker's CURVE public key file")
    return p


def main(argv: Sequence[str]) -> int:
    """Entry point; returns 0 (healthy), 1 (unhealthy) or 2 (usage error)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return HEALTHY if exc.code in (0, None) else USAGE
    if "://" not in args.endpoint:
        print(f"endpoint: expected tcp://HOST:PORT or ipc://PATH, got {args.endpoint!r}", file=sys.stderr)
        return USAGE
    for fp in args.fingerprint:
        if not _FINGERPRINT.fullmatch(fp):
            print(f"--fingerprint: expected a bundle's SHA-256 in hex, all 64 digits or the first 8 or more "
                  f"(as other commands print it), got {fp!r}", file=sys.stderr)
            return USAGE
    if args.timeout_ms <= 0:
        print(f"--timeout-ms: expected an integer > 0, got {args.timeout_ms}", file=sys.stderr)
        return USAGE
    if (args.curve_secret is None) != (args.curve_server_key is None):
        print("--curve-secret and --curve-server-key: expected both or neither, got one", file=sys.stderr)
        return USAGE
    curve = None if args.curve_secret is None else CurveClient(args.curve_secret, args.curve_server_key)
    try:
        ok, line = probe(args.endpoint, args.fingerprint, args.timeout_ms, curve)
    except JetsplitError as exc:  # an unreadable key file, say: the probe cannot work
        print(f"unhealthy {args.endpoint}: {exc}")
        return UNHEALTHY
    print(line)
    return HEALTHY if ok else UNHEALTHY


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
