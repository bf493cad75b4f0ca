"""CurveZMQ: key generation (library and CLI) and the worker's allow-list."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from jetsplit.cli import main as jetsplit_main
from jetsplit.errors import ConfigError
from jetsplit.protocol import Client, EchoServer, RequestTimeout, generate_keypair, load_keypair
from jetsplit.protocol.keys import main as keys_main
from jetsplit.protocol.security import CurveClient

from .conftest import Keys  # noqa: TID252 - pytest puts tests/protocol on sys.path


def test_generate_and_load(tmp_path: Path) -> None:
    public, secret = generate_keypair(tmp_path / "k", "edge-01")
    assert public.name == "edge-01.key" and secret.name == "edge-01.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pair = load_keypair(secret)
    assert pair.secret is not None and len(pair.public) == 40
    assert load_keypair(public) == type(pair)(pair.public, None)
    with pytest.raises(ConfigError, match="overwrite"):
        generate_keypair(tmp_path / "k", "edge-01")
    assert generate_keypair(tmp_path / "k", "edge-01", overwrite=True)[0] == public
    assert load_keypair(public).public != pair.public
    with pytest.raises(ConfigError, match="key name"):
        generate_keypair(tmp_path, "../escape")
    with pytest.raises(ConfigError, match="cannot read"):
        load_keypair(tmp_path / "missing.key")


def test_keys_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert keys_main(["generate", str(tmp_path), "--name", "worker"]) == 0
    assert (tmp_path / "worker.key").exists() and (tmp_path / "worker.key_secret").exists()
    assert keys_main(["show", str(tmp_path / "worker.key")]) == 0
    assert capsys.readouterr().out.strip().endswith(load_keypair(tmp_path / "worker.key").public.decode())
    # Through the dispatcher: a user error is one line and exit status 2.
    assert jetsplit_main(["keys", "generate", str(tmp_path), "--name", "worker"]) == 2
    assert capsys.readouterr().err == (
        f"jetsplit keys: error: {tmp_path}/worker.key or {tmp_path}/worker.key_secret already exists; refusing to "
        "overwrite (--force replaces the pair: every peer holding the old public key then needs the new one)\n")
    assert keys_main(["generate", str(tmp_path), "--name", "worker", "--force"]) == 0
    assert keys_main(["generate", str(tmp_path / "host")]) == 0
    assert len(list((tmp_path / "host").glob("*.key"))) == 1
    assert keys_main(["bogus"]) == 2


def test_allowed_client_is_served(endpoint: str, fingerprint: str, keys: Keys) -> None:
    with EchoServer(endpoint, curve=keys.server) as echo:
        with Client(echo.endpoint, fingerprint, timeout_ms=3000, curve=keys.allowed) as client:
            assert client.ping().server == "jetsplit-echo"
            assert client.infer(1, {}).ok


@pytest.mark.parametrize("who", ["stranger", "no-key", "wrong-server-key"])
def test_others_get_nothing(endpoint: str, fingerprint: str, keys: Keys, who: str, tmp_path: Path) -> None:
    curve = {
        "stranger": keys.stranger,
        "no-key": None,
        # An allowed client that trusts a different server key: the handshake fails.
        "wrong-server-key": CurveClient(keys.allowed.secret_key_file, keys.stranger.secret_key_file.with_suffix(".key")),
    }[who]
    with EchoServer(endpoint, curve=keys.server) as echo:
        with Client(echo.endpoint, fingerprint, timeout_ms=300, curve=curve) as client:
            with pytest.raises(RequestTimeout):
                client.infer(1, {})
        assert echo.requests == 0
        # The server is unharmed: an allowed client still gets in.
        with Client(echo.endpoint, fingerprint, timeout_ms=3000, curve=keys.allowed) as client:
            assert client.infer(1, {}).ok


def test_missing_allow_list_is_a_config_error(tmp_path: Path, keys: Keys) -> None:
    from jetsplit.protocol.security import CurveServer

    with pytest.raises(ConfigError, match="does not exist"):
        EchoServer(f"ipc://{tmp_path}/x.sock", curve=CurveServer(keys.server.secret_key_file, tmp_path / "nope"))
