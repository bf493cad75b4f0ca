"""``jetsplit keys``: CurveZMQ key pairs for workers and edges.

    jetsplit keys generate DIR [--name NAME] [--force]
        writes DIR/NAME.key (public: copy it to peers) and DIR/NAME.key_secret
        (secret, mode 0600). NAME defaults to this host's name.
    jetsplit keys show FILE
        prints the Z85 public key in FILE.

A worker trusts the clients whose ``.key`` files are in its allowed-clients
directory; an edge needs the worker's ``.key`` (see ``protocol/SPEC.md`` section 8).
"""

from __future__ import annotations

import argparse
import re
import socket
from collections.abc import Sequence

from .security import generate_keypair, load_public_key

__all__ = ["main"]


def _default_name() -> str:
    name = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname()).strip("-.")[:64]
    return name or "jetsplit"


def main(argv: Sequence[str]) -> int:
    """Entry point of ``jetsplit keys``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="jetsplit keys", description="CurveZMQ key pairs")
    sub = parser.add_subparsers(dest="action", required=True)
    gen = sub.add_parser("generate", help="write a new key pair into a directory")
    gen.add_argument("directory", metavar="DIR")
    gen.add_argument("--name", default=None, help="file name stem (default: host name)")
    gen.add_argument("--force", action="store_true", help="overwrite an existing pair")
    show = sub.add_parser("show", help="print the public key of a key file")
    show.add_argument("file", metavar="FILE")
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        return int(exc.code or 0)
    if args.action == "generate":
        public, secret = generate_keypair(args.directory, args.name or _default_name(), overwrite=args.force)
        print(f"public key: {public}  (copy to peers)")
        print(f"secret key: {secret}  (keep on this machine)")
        return 0
    print(load_public_key(args.file).decode("ascii"))
    return 0
