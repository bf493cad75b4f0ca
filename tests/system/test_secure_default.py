"""Secure by default (SPEC.md section 8): a worker bound beyond loopback without
CURVE, and an edge that would offload in plaintext to a worker beyond loopback,
refuse to start with one line, unless told ``--insecure``; then they run and warn.
Real ``jetsplit`` processes."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import pytest

from jetsplit.cloud.config import CloudConfig
from jetsplit.cloud.worker import Worker
from jetsplit.edge.agent import EdgeAgent
from jetsplit.edge.config import EdgeConfig, load_edge_config
from jetsplit.errors import ConfigError
from jetsplit.protocol.exposure import is_loopback
from tests.support.daemons import JETSPLIT, Daemon
from tests.support.frames import digits_folder


@pytest.mark.parametrize(
    ("endpoint", "loopback"),
    [
        ("tcp://127.0.0.1:5555", True), ("tcp://127.8.9.10:1", True), ("tcp://localhost:5555", True),
        ("tcp://[::1]:5555", True), ("ipc:///run/jetsplit/worker.sock", True), ("inproc://w", True),
        ("tcp://0.0.0.0:5555", False), ("tcp://*:5555", False), ("tcp://10.0.0.5:5555", False),
        ("tcp://[::]:5555", False), ("tcp://eth0:5555", False), ("tcp://worker.example.net:5555", False),
        ("tcp://127.0.0.1;10.0.0.5:5555", False), ("tcp://10.0.0.5;127.0.0.1:5555", True),
    ],
)
def test_loopback(endpoint: str, loopback: bool) -> None:
    assert is_loopback(endpoint) is loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_worker_beyond_loopback_without_curve_is_refused(make_bundle) -> None:
    bundle = make_bundle("little-big")
    done = subprocess.run([JETSPLIT, "cloud", "serve", "--bundle", str(bundle.root),
                           "--bind", f"tcp://0.0.0.0:{_free_port()}"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    err = done.stderr.strip().splitlines()[-1]  # after the logged configuration: one line
    assert err.startswith("jetsplit cloud: error: bind: ") and "not a loopback address and no CURVE keys" in err
    assert "jetsplit keys generate" in err and "--insecure" in err
    # The library refuses too, before loading anything.
    with pytest.raises(ConfigError, match="no CURVE keys"):
        Worker(CloudConfig(bind=("tcp://0.0.0.0:1",), bundles=(str(bundle.root),)))


def test_insecure_worker_runs_and_warns(make_bundle) -> None:
    bundle = make_bundle("little-big")
    worker = Daemon("cloud", "serve", "--bundle", str(bundle.root), "--bind", f"tcp://0.0.0.0:{_free_port()}",
                    "--insecure")
    try:
        worker.wait_for("serving ")
    finally:
        assert worker.stop() == 0
    assert worker.proc.stderr is not None
    assert "WITHOUT CURVE (--insecure)" in worker.proc.stderr.read()


def test_insecure_in_the_config_file(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("little-big")
    config = tmp_path / "cloud.toml"
    config.write_text(f'bind = ["tcp://0.0.0.0:{_free_port()}"]\nbundles = ["{bundle.root}"]\ninsecure = true\n')
    worker = Daemon("cloud", "serve", "--config", str(config))
    try:
        worker.wait_for("serving ")
    finally:
        assert worker.stop() == 0


def test_edge_offloading_in_plaintext_beyond_loopback_is_refused(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("little-big")
    src = digits_folder(tmp_path / "frames", 5, "all")
    args = [JETSPLIT, "edge", "run", "--bundle", str(bundle.root), "--cloud", "tcp://192.0.2.10:5555",
            "--offload", "frames", "--source", str(src), "--sink", f"jsonl:{tmp_path / 'out.jsonl'}",
            "--deadline-ms", "50"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    err = done.stderr.strip().splitlines()[-1]
    assert err.startswith("jetsplit edge: error: cloud: tcp://192.0.2.10:5555 is not a loopback address and no CURVE")
    assert "frames would cross the network in plaintext" in err
    assert "jetsplit keys generate" in err
    # --insecure: it runs (the worker is unreachable, so every frame falls back) and warns.
    done = subprocess.run([*args, "--insecure"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "WITHOUT CURVE (--insecure)" in done.stderr
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 5
    # Nothing leaves the board: nothing to refuse.
    config = load_edge_config(None, {}, {"bundle": str(bundle.root), "source": str(src),
                                         "cloud": ("tcp://192.0.2.10:5555",), "offload": "none"})
    EdgeAgent(config).close()


def test_edge_library_refuses_too(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    config = EdgeConfig(bundle=str(bundle.root), source=str(tmp_path), cloud=("tcp://worker.example.net:5555",))
    with pytest.raises(ConfigError, match="activations would cross the network in plaintext"):
        EdgeAgent(config)
