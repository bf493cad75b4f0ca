"""The systemd units in systemd/ and the daemons' sd_notify, checked for real.

- ``systemd-analyze verify`` prints nothing for either unit;
- ``systemd-analyze security --offline=yes`` rates their exposure at 4.0 or lower;
- a real ``NOTIFY_SOCKET`` (an AF_UNIX datagram socket, as systemd binds it) sees
  READY=1, then WATCHDOG=1 again and again, then STOPPING=1 on SIGTERM, from the
  main process of a real ``jetsplit cloud serve`` and ``jetsplit edge run``;
- the worker answers inference under MemoryDenyWriteExecute (the kernel's form of it);
- the example configs parse with the real loaders.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from jetsplit.chain import Chain
from jetsplit.cloud.config import load_cloud_config
from jetsplit.cloud.health import probe
from jetsplit.datasets import load_dataset
from jetsplit.edge.config import load_edge_config
from jetsplit.edge.pool import PoolConfig
from jetsplit.errors import ConfigError
from jetsplit.handoff import pack
from jetsplit.protocol import Client
from tests.support.daemons import JETSPLIT, Daemon, Lines, start_worker
from tests.support.frames import digits_folder

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
EDGE_UNIT = UNITS / "jetsplit-edge.service"
CLOUD_UNIT = UNITS / "jetsplit-cloud@.service"
INSTALLED = "/opt/jetsplit/venv/bin/jetsplit"
MAX_EXPOSURE = 4.0

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed on this machine")


# --------------------------------------------------------------------------- the units


def _runnable_copy(unit: Path, into: Path) -> Path:
    """The unit with ExecStart= pointing at this checkout's ``jetsplit``.

    ``systemd-analyze verify`` checks that ExecStart's binary exists and is
    executable, and the units name the installed path (/opt/jetsplit/venv), which a
    test machine does not have. Rewriting only that path keeps every other line,
    and so every directive under test, exactly as shipped.
    """
    text = unit.read_text()
    assert INSTALLED in text, f"{unit.name}: expected ExecStart={INSTALLED} ..."
    copy = into / unit.name
    copy.write_text(text.replace(INSTALLED, JETSPLIT))
    changed = [a for a, b in zip(text.splitlines(), copy.read_text().splitlines(), strict=True) if a != b]
    assert changed and all(line.startswith("ExecStart=") for line in changed), changed
    return copy


def _analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run([SYSTEMD_ANALYZE, "--no-pager", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


@needs_analyze
@pytest.mark.parametrize("unit", [EDGE_UNIT, CLOUD_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_verify_prints_nothing(unit: Path, tmp_path: Path) -> None:
    copy = _runnable_copy(unit, tmp_path)
    targets = [copy]
    if unit.name.endswith("@.service"):
        # The template as the instance an operator enables (%i = 5555).
        targets.append(tmp_path / unit.name.replace("@.", "@5555."))
    for target in targets:
        done = _analyze("verify", str(target), cwd=tmp_path)
        assert (done.stdout + done.stderr) == "", f"{target.name}:\n{done.stdout}{done.stderr}"
        assert done.returncode == 0


@needs_analyze
@pytest.mark.parametrize("unit", [CLOUD_UNIT, EDGE_UNIT], ids=lambda p: p.name)
def test_systemd_analyze_security_exposure(unit: Path, tmp_path: Path) -> None:
    copy = _runnable_copy(unit, tmp_path)
    done = _analyze("security", "--offline=yes", str(copy), cwd=tmp_path)
    if "--offline" in done.stderr and "unrecognized" in done.stderr:
        pytest.skip(f"this systemd-analyze has no --offline (systemd >= 250 has): {done.stderr.strip()}")
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout)
    assert match, done.stdout + done.stderr
    exposure = float(match.group(1))
    print(f"{unit.name}: overall exposure {exposure}")
    assert exposure <= MAX_EXPOSURE, done.stdout


def _directives(unit: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    text = unit.read_text().replace("\\\n", " ")
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.mark.parametrize("unit", [EDGE_UNIT, CLOUD_UNIT], ids=lambda p: p.name)
def test_units_are_notify_services_with_a_watchdog(unit: Path) -> None:
    d = _directives(unit)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert d["WatchdogSec"] and d["Restart"] == ["on-failure"]
    assert d["NoNewPrivileges"] == ["yes"] and d["CapabilityBoundingSet"] == [""]
    assert d["ProtectSystem"] == ["strict"]
    # SIGTERM drains (the worker waits up to drain_timeout_s = 30 s): no early SIGKILL.
    assert int(d["TimeoutStopSec"][0].rstrip("s")) >= 30


def test_cloud_unit_hardening() -> None:
    d = _directives(CLOUD_UNIT)
    for key in ("DynamicUser", "ProtectHome", "PrivateTmp", "PrivateDevices", "MemoryDenyWriteExecute"):
        assert d[key] == ["yes"], key
    assert d["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
    assert "@system-service" in d["SystemCallFilter"]
    assert "JETSPLIT_CLOUD_BIND=tcp://0.0.0.0:%i" in d["Environment"]


def test_edge_unit_device_access() -> None:
    d = _directives(EDGE_UNIT)
    assert d["DevicePolicy"] == ["closed"] and d["SupplementaryGroups"] == ["video"]
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    assert {"char-video4linux", "/dev/nvmap", "/dev/nvhost-ctrl-gpu", "/dev/nvgpu/igpu0/ctrl"} <= allowed


# ---------------------------------------------------------------- example configurations


def test_example_configs_parse_with_the_real_loaders() -> None:
    cloud = load_cloud_config(UNITS / "cloud.toml.example", {}, {})
    assert cloud.bundles == ("/var/lib/jetsplit/bundles/split",)
    assert cloud.curve_secret == "/etc/jetsplit/keys/worker.key_secret"
    assert cloud.curve_allow == "/etc/jetsplit/keys/clients"
    edge = load_edge_config(UNITS / "edge.toml.example", {}, {})
    assert edge.bundle == "/var/lib/jetsplit/bundles/split" and len(edge.cloud) == 2
    assert edge.backend == "tensorrt" and edge.budgets.latency_ms == 120.0
    assert edge.curve_server_key == "/etc/jetsplit/keys/worker.key"


def test_units_and_examples_run_with_curve_beyond_loopback(tmp_path: Path) -> None:
    """Secure by default (SPEC.md 8): the shipped unit, the example configs and the
    Kubernetes manifest all use CURVE, so they start; without it they would not."""
    cloud = load_cloud_config(UNITS / "cloud.toml.example", {}, {})
    assert cloud.bind == ("tcp://0.0.0.0:5555",) and not cloud.insecure
    cloud.check_exposure()  # CURVE set: serving 0.0.0.0 is allowed
    edge = load_edge_config(UNITS / "edge.toml.example", {}, {})
    assert not edge.insecure
    edge.check_exposure()
    # The unit binds 0.0.0.0 from its instance name and passes the keys as flags.
    exec_start = " ".join(_directives(CLOUD_UNIT)["ExecStart"])
    assert "--curve-secret" in exec_start and "--curve-allow" in exec_start and "--insecure" not in exec_start
    unit_config = load_cloud_config(UNITS / "cloud.toml.example", {"JETSPLIT_CLOUD_BIND": "tcp://0.0.0.0:5555"},
                                    {"curve_secret": "%d/worker.key_secret", "curve_allow": "/etc/jetsplit/keys/clients"})
    unit_config.check_exposure()
    bare = tmp_path / "cloud.toml"
    bare.write_text("\n".join(line for line in (UNITS / "cloud.toml.example").read_text().splitlines()
                              if not line.startswith(("[curve]", "secret", "allow"))))
    with pytest.raises(ConfigError, match="no CURVE keys"):
        load_cloud_config(bare, {}, {}).check_exposure()
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    docs = [d for d in yaml.safe_load_all((ROOT / "deploy" / "k8s" / "jetsplit-cloud.yaml").read_text()) if d]
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    k8s = tmp_path / "k8s-cloud.toml"
    k8s.write_text(config_map["data"]["cloud.toml"])
    k8s_config = load_cloud_config(k8s, {}, {})
    assert k8s_config.curve_secret and k8s_config.curve_allow and not k8s_config.insecure
    k8s_config.check_exposure()


def test_edge_example_pool_table_states_the_defaults(tmp_path: Path) -> None:
    # [pool] is commented out in the example: uncommented, it must parse and change nothing.
    text = (UNITS / "edge.toml.example").read_text()
    block = re.search(r"^# \[pool\].*?(?=^$)", text, re.M | re.S)
    assert block is not None
    uncommented = "\n".join(line.removeprefix("# ") for line in block.group(0).splitlines())
    (tmp_path / "edge.toml").write_text(text.replace(block.group(0), uncommented + "\n"))
    edge = load_edge_config(tmp_path / "edge.toml", {}, {})
    assert edge.pool == PoolConfig() and len(uncommented.splitlines()) == 1 + len(PoolConfig.__dataclass_fields__)


def _env_example(path: Path) -> dict[str, str]:
    """Every assignment in an environment-file example, commented out or not."""
    env: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.fullmatch(r"#?([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if m:
            env[m.group(1)] = m.group(2)
    return env


def test_environment_file_examples_name_real_variables() -> None:
    # Each one must change something (the loaders refuse names they do not know, too).
    cloud_base = load_cloud_config(UNITS / "cloud.toml.example", {}, {}).describe()
    for var, value in _env_example(UNITS / "cloud.env.example").items():
        changed = load_cloud_config(UNITS / "cloud.toml.example", {var: value}, {}).describe()
        assert changed != cloud_base, f"cloud.env.example: {var} has no effect"
    edge_base = load_edge_config(UNITS / "edge.toml.example", {}, {}).describe()
    for var, value in _env_example(UNITS / "edge.env.example").items():
        changed = load_edge_config(UNITS / "edge.toml.example", {var: value}, {}).describe()
        assert changed != edge_base, f"edge.env.example: {var} has no effect"


# ------------------------------------------------------------------------- sd_notify


class NotifySocket:
    """What systemd binds for a Type=notify service: an AF_UNIX datagram socket.

    SO_PASSCRED attaches the sender's pid to every datagram, so the test can check
    the messages come from the main process, as NotifyAccess=main requires.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(str(path))
        self.seen: list[tuple[int, str]] = []

    def wait_for(self, state: str, timeout: float = 60.0, count: int = 1) -> list[tuple[int, str]]:
        """Read datagrams until ``count`` of them hold the line ``state``."""
        end = time.monotonic() + timeout
        while sum(state in text.splitlines() for _, text in self.seen) < count:
            left = end - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{count} x {state!r} not seen within {timeout}s: {self.seen}")
            self.sock.settimeout(left)
            try:
                data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("3i")))
            except TimeoutError:
                continue
            pid = -1
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                    pid = struct.unpack("3i", payload[:12])[0]
            self.seen.append((pid, data.decode()))
        return self.seen

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    path = tmp_path / "notify.sock"
    short = None
    if len(str(path)) > 100:  # sun_path holds 108 bytes
        short = tempfile.mkdtemp(prefix="jsn-")
        path = Path(short) / "notify.sock"
    ns = NotifySocket(path)
    try:
        yield ns
    finally:
        ns.close()
        if short is not None:
            shutil.rmtree(short, ignore_errors=True)


def _systemd_env(ns: NotifySocket, watchdog_usec: int = 200_000) -> dict[str, str]:
    # WATCHDOG_PID empty: one inherited from an outer service must not disable it.
    return {"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": str(watchdog_usec), "WATCHDOG_PID": ""}


def _check_lifecycle(ns: NotifySocket, pid: int) -> None:
    states = [text for _, text in ns.seen]
    assert all(p == pid for p, _ in ns.seen), f"datagrams from a process other than {pid}: {ns.seen}"
    first_ready = next(i for i, s in enumerate(states) if "READY=1" in s.splitlines())
    first_watchdog = next(i for i, s in enumerate(states) if s == "WATCHDOG=1")
    stopping = next(i for i, s in enumerate(states) if s == "STOPPING=1")
    assert first_ready < first_watchdog < stopping, states
    assert sum(s == "WATCHDOG=1" for s in states[first_ready:stopping]) >= 3, states


def test_cloud_worker_notifies_ready_watchdog_stopping(make_bundle, notify_socket: NotifySocket,
                                                       tmp_path: Path) -> None:
    bundle = make_bundle("split")
    worker = Daemon("cloud", "serve", "--bundle", str(bundle.root), "--bind", "tcp://127.0.0.1:0",
                    env=_systemd_env(notify_socket))
    try:
        endpoint = worker.wait_for("serving ").split()[1]
        notify_socket.wait_for("READY=1")
        # READY means serving: the health probe gets its pong.
        ok, line = probe(endpoint, [bundle.fingerprint], timeout_ms=5000)
        assert ok, line
        # WATCHDOG_USEC = 200 ms: a ping every 100 ms from the serving loop.
        notify_socket.wait_for("WATCHDOG=1", timeout=10.0, count=3)
        worker.proc.send_signal(signal.SIGTERM)
        notify_socket.wait_for("STOPPING=1", timeout=30.0)
        assert worker.proc.wait(30) == 0
    finally:
        worker.stop()
    _check_lifecycle(notify_socket, worker.pid)


def test_edge_agent_notifies_ready_watchdog_stopping(make_bundle, notify_socket: NotifySocket,
                                                     tmp_path: Path) -> None:
    bundle = make_bundle("split")
    images = digits_folder(tmp_path / "frames", 400)
    results = tmp_path / "results.jsonl"
    worker, endpoint = start_worker(str(bundle.root), bind="tcp://127.0.0.1:0")
    try:
        # 400 frames at 20 fps: the agent is still running when SIGTERM comes.
        edge = Daemon("edge", "run", "--bundle", str(bundle.root), "--cloud", endpoint,
                      "--source", str(images), "--realtime", "--fps", "20",
                      "--sink", f"jsonl:{results}", env=_systemd_env(notify_socket))
        try:
            notify_socket.wait_for("READY=1")
            notify_socket.wait_for("WATCHDOG=1", timeout=10.0, count=3)
            assert edge.proc.poll() is None, "the agent ended before SIGTERM"
            edge.proc.send_signal(signal.SIGTERM)
            notify_socket.wait_for("STOPPING=1", timeout=30.0)
            assert edge.proc.wait(30) == 0
        finally:
            edge.stop()
        _check_lifecycle(notify_socket, edge.pid)
        lines = results.read_text().splitlines()
        assert 0 < len(lines) < 400
    finally:
        assert worker.stop() == 0


# ------------------------------------------------------------- MemoryDenyWriteExecute

# Sets the kernel's memory-deny-write-execute on itself (prctl PR_SET_MDWE, Linux
# >= 6.3; inherited across exec), then becomes the worker. The kernel refuses what
# systemd's MemoryDenyWriteExecute= refuses: a mapping both writable and executable,
# and making a mapping executable that was not. Exit 77 where the kernel lacks it.
_MDWE_EXEC = """
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0 or libc.prctl(66, 0, 0, 0, 0) != 1:
    print("no PR_SET_MDWE", flush=True)
    sys.exit(77)
os.execv(sys.argv[1], sys.argv[1:])
"""


def test_worker_serves_under_memory_deny_write_execute(make_bundle, tmp_path: Path) -> None:
    bundle = make_bundle("split")
    proc = subprocess.Popen(
        [sys.executable, "-c", _MDWE_EXEC, JETSPLIT, "cloud", "serve", "--bundle", str(bundle.root),
         "--bind", f"ipc://{tmp_path}/w.sock"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        lines = Lines(proc.stdout)  # read with a timeout: a hung worker fails, not hangs
        line = lines.expect("", 60.0) or ""
        if proc.poll() == 77 or line.startswith("no PR_SET_MDWE"):
            pytest.skip("this kernel has no PR_SET_MDWE (Linux >= 6.3) to stand in for MemoryDenyWriteExecute=")
        if not line.startswith("serving "):
            line = lines.expect("serving ", 60.0) or ""
        assert line.startswith("serving "), proc.stderr.read() if proc.stderr else ""
        assert Path(f"/proc/{proc.pid}/status").read_text().count("MemoryDenyWriteExecute") <= 1
        data = load_dataset("digits", "test")
        with Chain.open(bundle, where="edge") as edge_chain:
            res = edge_chain.run_from(0, edge_chain.preprocess(data.images[:1]), stop_at=1,
                                      thresholds=[float("inf"), None])
        with Chain.open(bundle) as full:
            want = full.run_all(full.preprocess(data.images[:1]))[-1].probs[0]
        tensors = pack(bundle, 1, data.images[0], res.carry, res.state)
        with Client(line.split()[1], bundle.fingerprint, timeout_ms=10000) as client:
            for _ in range(20):
                reply = client.infer(1, tensors, deadline_ms=5000)
                assert reply.ok, reply.message
        np.testing.assert_allclose(reply.scores, want, atol=1e-5)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
