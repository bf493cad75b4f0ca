"""CurveZMQ: key pairs on disk, and the worker's allow-list of client keys.

Keys are the Z85 certificate files that ``zmq.auth`` reads and writes: ``NAME.key``
holds the public key (safe to copy anywhere), ``NAME.key_secret`` the public and the
secret key (mode 0600, never leaves its machine). Set-up (SPEC.md section 8)::

    jetsplit keys generate /etc/jetsplit/keys --name worker     # on the worker
    jetsplit keys generate /etc/jetsplit/keys --name edge-01    # on each edge
    # copy edge-01.key into the worker's allowed-clients directory,
    # copy worker.key to each edge.

The worker authenticates through ZAP: a :class:`zmq.auth.thread.ThreadAuthenticator`
accepts a handshake only if the client's public key is one of the ``*.key`` files in
the allow-list directory. A client with another key, or none, never completes a
connection, so it sees only timeouts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from jetsplit.errors import ConfigError

__all__ = [
    "CurveClient",
    "CurveServer",
    "KeyPair",
    "allowed_client_keys",
    "apply_client",
    "apply_server",
    "generate_keypair",
    "load_keypair",
    "load_public_key",
    "start_authenticator",
]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: The ZAP domain our server sockets announce, and the one the allow-list covers.
ZAP_DOMAIN = b"jetsplit"


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair, Z85-encoded (40 bytes each); ``secret`` is None for a
    public-only certificate."""

    public: bytes
    secret: bytes | None


@dataclass(frozen=True)
class CurveServer:
    """Server side: its own secret key file and the directory of allowed client keys."""

    secret_key_file: str | os.PathLike[str]
    allowed_clients_dir: str | os.PathLike[str]


@dataclass(frozen=True)
class CurveClient:
    """Client side: its own secret key file and the server's public key file."""

    secret_key_file: str | os.PathLike[str]
    server_public_key_file: str | os.PathLike[str]


def generate_keypair(directory: str | os.PathLike[str], name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` into ``directory``; return their paths.

    Refuses to overwrite an existing pair unless ``overwrite``, since a replaced
    key silently locks out every peer that trusted the old one.
    """
    if not _NAME.match(name):
        raise ConfigError(f"key name {name!r} must be letters, digits, '.', '_' or '-' (at most 64)")
    folder = Path(directory)
    public, secret = folder / f"{name}.key", folder / f"{name}.key_secret"
    if not overwrite and (public.exists() or secret.exists()):
        raise ConfigError(f"{public} or {secret} already exists; refusing to overwrite")
    folder.mkdir(parents=True, exist_ok=True)
    # Create the secret file first with mode 0600, so it is never world-readable.
    for path in (public, secret):
        path.unlink(missing_ok=True)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    pub_path, sec_path = zmq.auth.create_certificates(str(folder), name)
    os.chmod(sec_path, 0o600)
    return Path(pub_path), Path(sec_path)


def load_keypair(path: str | os.PathLike[str]) -> KeyPair:
    """Read a ``.key`` or ``.key_secret`` certificate file."""
    p = Path(path)
    try:
        public, secret = zmq.auth.load_certificate(str(p))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read CURVE key file {p}: {exc}") from exc
    if public is None or len(public) != 40:
        raise ConfigError(f"{p} holds no CURVE public key")
    return KeyPair(public=public, secret=secret)


def load_public_key(path: str | os.PathLike[str]) -> bytes:
    """The Z85 public key in a certificate file."""
    return load_keypair(path).public


def _secret_pair(path: Path) -> KeyPair:
    pair = load_keypair(path)
    if pair.secret is None:
        raise ConfigError(f"{path} holds no secret key (use the .key_secret file)")
    return pair


def allowed_client_keys(directory: str | os.PathLike[str]) -> list[bytes]:
    """The public keys of every ``*.key`` file in an allow-list directory."""
    folder = Path(directory)
    if not folder.is_dir():
        raise ConfigError(f"allowed-clients directory {folder} does not exist")
    return [load_public_key(p) for p in sorted(folder.glob("*.key"))]


def start_authenticator(context: zmq.Context[Any], allowed_clients_dir: str | os.PathLike[str]) -> ThreadAuthenticator:
    """Start ZAP on ``context``, accepting only client keys found in the directory.

    Must run before the server socket binds: libzmq lets any CURVE client in when no
    ZAP handler is present. One authenticator per context.
    """
    folder = Path(allowed_clients_dir)
    allowed_client_keys(folder)  # validate the files early, with a clear error
    auth = ThreadAuthenticator(context)
    auth.start()
    auth.configure_curve(domain=ZAP_DOMAIN.decode(), location=str(folder))
    return auth


def apply_server(sock: zmq.Socket[Any], curve: CurveServer) -> None:
    """Make ``sock`` a CURVE server with the configured secret key."""
    pair = _secret_pair(Path(curve.secret_key_file))
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.curve_server = True
    sock.zap_domain = ZAP_DOMAIN


def apply_client(sock: zmq.Socket[Any], curve: CurveClient) -> None:
    """Make ``sock`` a CURVE client of the configured server key."""
    pair = _secret_pair(Path(curve.secret_key_file))
    sock.curve_secretkey = pair.secret
    sock.curve_publickey = pair.public
    sock.curve_serverkey = load_public_key(curve.server_public_key_file)
