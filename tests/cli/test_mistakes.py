"""Every mistake a field engineer makes gets one line naming it and exit status 2
(issue 11, item 6): the real ``jetsplit`` command in a process of its own, as a
shell runs it, checked for its exact last line and for no traceback."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.daemons import JETSPLIT, start_worker
from tests.support.frames import digits_folder


def _run(*args: str, env: dict[str, str] | None = None, timeout: float = 120.0) -> tuple[int, str]:
    done = subprocess.run([JETSPLIT, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)
    return done.returncode, done.stderr


# A daemon's own log lines (its start-up INFO, a warning about the bundle) come before the error.
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (DEBUG|INFO|WARNING) ")


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if not _LOG_LINE.match(line)]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture
def listening() -> Any:
    """A TCP port something already listens on."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen()
    yield s.getsockname()[1]
    s.close()


def test_worker_bind_port_in_use(make_bundle: Any, listening: int) -> None:
    bundle = make_bundle("split")
    rc, err = _run("cloud", "serve", "--bundle", str(bundle.root), "--bind", f"tcp://127.0.0.1:{listening}")
    assert rc == 2 and _one_line(err) == (
        f"jetsplit cloud: error: cannot bind tcp://127.0.0.1:{listening}: address already in use (another process "
        "listens there: stop it, or choose another endpoint)")


def test_worker_metrics_port_in_use(make_bundle: Any, listening: int, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    rc, err = _run("cloud", "serve", "--bundle", str(bundle.root), "--bind", f"ipc://{tmp_path}/w",
                   "--metrics-port", str(listening))
    assert rc == 2 and _one_line(err) == (
        f"jetsplit cloud: error: metrics: cannot listen on 127.0.0.1:{listening}: address already in use (another "
        "process listens there: choose another --metrics-port, metrics_port in cloud.toml or "
        "JETSPLIT_CLOUD_METRICS_PORT)")


@pytest.mark.parametrize(("command", "var", "message"), [
    ("edge", "JETSPLIT_EDGE_DEADLNE_MS", "JETSPLIT_EDGE_DEADLNE_MS: unknown variable (did you mean "
                                         "JETSPLIT_EDGE_DEADLINE_MS?)"),
    ("cloud", "JETSPLIT_CLOUD_THREDS", "JETSPLIT_CLOUD_THREDS: unknown variable (did you mean "
                                       "JETSPLIT_CLOUD_THREADS?)"),
])
def test_environment_variable_typo(make_bundle: Any, tmp_path: Path, command: str, var: str, message: str) -> None:
    bundle = make_bundle("split")
    args = (["edge", "run", "--source", str(tmp_path)] if command == "edge"
            else ["cloud", "serve", "--bind", f"ipc://{tmp_path}/w"])
    rc, err = _run(*args, "--bundle", str(bundle.root), env={var: "100"})
    assert rc == 2 and _one_line(err) == f"jetsplit {command}: error: {message}"


def test_sink_in_a_directory_that_does_not_exist(make_bundle: Any, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    sink = f"zmq-pub:ipc://{tmp_path}/run/jetsplit/results"
    rc, err = _run("edge", "run", "--bundle", str(bundle.root), "--source", str(digits_folder(tmp_path / "d", 3)),
                   "--sink", sink)
    assert rc == 2 and _one_line(err) == (
        f"jetsplit edge: error: sink {sink}: cannot bind ipc://{tmp_path}/run/jetsplit/results: directory "
        f"{tmp_path}/run/jetsplit does not exist (systemd creates it for the service with RuntimeDirectory=; "
        "elsewhere create it or bind another path)")


def test_power_model_stage_the_bundle_lacks(make_bundle: Any, tmp_path: Path) -> None:
    bundle = make_bundle("little-big")
    toml = tmp_path / "edge.toml"
    toml.write_text(f'[edge]\nbundle = "{bundle.root}"\nsource = "{tmp_path}"\n'
                    '[power]\nsource = "model"\n[power.model]\nidle_w = 4.5\nstage_w = { litle = 7.0 }\n')
    rc, err = _run("edge", "run", "--config", str(toml))
    assert rc == 2 and _one_line(err) == (
        f"jetsplit edge: error: [power.model].stage_w: no stage 'litle' in bundle {bundle.name!r} (its stages: "
        "little, big)")


def test_top_given_a_path(tmp_path: Path) -> None:
    rc, err = _run("top", f"{tmp_path}/results")
    assert rc == 2 and _one_line(err) == (
        f"jetsplit top: error: ENDPOINT '{tmp_path}/results': expected a ZeroMQ endpoint such as "
        f"ipc:///run/jetsplit/results or tcp://HOST:PORT; for the socket file, write ipc://{tmp_path}/results")


def test_edge_port_in_use_for_its_sink(make_bundle: Any, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    worker, endpoint = start_worker(str(bundle.root), bind="tcp://127.0.0.1:0")
    try:
        rc, err = _run("edge", "run", "--bundle", str(bundle.root), "--source", str(digits_folder(tmp_path, 3)),
                       "--sink", f"zmq-pub:{endpoint}")
    finally:
        worker.stop()
    assert rc == 2 and _one_line(err) == (
        f"jetsplit edge: error: sink zmq-pub:{endpoint}: cannot bind {endpoint}: address already in use (another "
        "process listens there: stop it, or choose another endpoint)")


@pytest.mark.parametrize(("bind", "why"), [
    ("tcp://127.0.0.1:99999", "port 99999 is out of range (0-65535)"),  # libzmq would bind port 34463
    ("tcp://10.255.255.1:5555", "no interface of this host has that address (bind 0.0.0.0 for all of them, or "
                                "one that `ip -brief address` lists)"),
])
def test_worker_bind_address_mistakes(make_bundle: Any, bind: str, why: str) -> None:
    # --insecure: a non-loopback address without CURVE is refused first, and rightly (issue 16).
    rc, err = _run("cloud", "serve", "--bundle", str(make_bundle("split").root), "--bind", bind, "--insecure")
    assert rc == 2 and _one_line(err) == f"jetsplit cloud: error: cannot bind {bind}: {why}"


def test_a_typo_in_a_key_path(make_bundle: Any, tmp_path: Path) -> None:
    from jetsplit.protocol import generate_keypair

    generate_keypair(tmp_path, "worker")
    rc, err = _run("edge", "run", "--bundle", str(make_bundle("split").root), "--source", str(tmp_path),
                   "--cloud", "tcp://127.0.0.1:5555", "--curve-secret", f"{tmp_path}/edg.key_secret",
                   "--curve-server-key", f"{tmp_path}/worker.key")
    assert rc == 2 and _one_line(err) == (
        f"jetsplit edge: error: cannot read CURVE key file {tmp_path}/edg.key_secret: no such file")
