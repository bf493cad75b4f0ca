"""Fixtures for the protocol tests: endpoints, a fingerprint, CURVE keys."""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jetsplit.protocol.security import CurveClient, CurveServer, generate_keypair

# Unix socket paths are limited to ~107 bytes; pytest's tmp_path can be longer.
_IPC_PATH_MAX = 100


@pytest.fixture
def fingerprint() -> str:
    return hashlib.sha256(b"a bundle").hexdigest()


@pytest.fixture
def ipc_dir(tmp_path: Path) -> Iterator[Path]:
    if len(str(tmp_path)) + 16 <= _IPC_PATH_MAX:
        yield tmp_path
        return
    short = Path(tempfile.mkdtemp(prefix="jsp", dir="/tmp"))
    try:
        yield short
    finally:
        shutil.rmtree(short, ignore_errors=True)


@pytest.fixture(params=["ipc", "tcp"])
def endpoint(request: pytest.FixtureRequest, ipc_dir: Path) -> str:
    """An endpoint to bind: ipc in a temporary directory, or tcp on a free loopback
    port (``*``: the server's ``last_endpoint`` tells the port)."""
    return f"ipc://{ipc_dir}/echo.sock" if request.param == "ipc" else "tcp://127.0.0.1:*"


@dataclass(frozen=True)
class Keys:
    server: CurveServer
    allowed: CurveClient
    stranger: CurveClient


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    """A server key pair, an allowed client and a client whose key is not allowed."""
    server_dir, allowed_dir, client_dir = tmp_path / "server", tmp_path / "allowed", tmp_path / "clients"
    _, server_secret = generate_keypair(server_dir, "worker")
    client_public, client_secret = generate_keypair(client_dir, "edge-01")
    _, stranger_secret = generate_keypair(client_dir, "stranger")
    allowed_dir.mkdir()
    shutil.copy(client_public, allowed_dir / client_public.name)
    server_public = server_dir / "worker.key"
    return Keys(
        server=CurveServer(server_secret, allowed_dir),
        allowed=CurveClient(client_secret, server_public),
        stranger=CurveClient(stranger_secret, server_public),
    )
