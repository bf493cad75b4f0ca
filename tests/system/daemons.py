"""Helpers for system tests: start the real daemons as processes and read them."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

JETSPLIT = str(Path(sys.executable).with_name("jetsplit"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Daemon:
    """A ``jetsplit ...`` process whose stdout lines are read until a marker."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [JETSPLIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[str] = []

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """The first stdout line starting with ``prefix`` (the daemon's own report)."""
        end = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < end:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"daemon exited {self.proc.returncode}: {self.proc.stderr.read() if self.proc.stderr else ''}")
                continue
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line.rstrip("\n")
        raise TimeoutError(f"no line starting with {prefix!r} within {timeout}s: {self.lines}")

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise

    @property
    def pid(self) -> int:
        return self.proc.pid


def start_worker(*bundles: str, bind: str, extra: tuple[str, ...] = ()) -> tuple[Daemon, str]:
    args = ["cloud", "serve", "--bind", bind, *extra]
    for b in bundles:
        args += ["--bundle", b]
    d = Daemon(*args)
    line = d.wait_for("serving ")
    return d, line.split()[1]


class NetnsDaemon(Daemon):
    """A :class:`Daemon` started through a prefix such as ``ip netns exec NS``.

    ``ip netns exec`` execs the command in place, so ``pid`` and the signals sent
    to it reach the ``jetsplit`` process itself.
    """

    def __init__(self, prefix: Sequence[str], *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*prefix, JETSPLIT, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )
        self.lines = []


def start_worker_in(prefix: Sequence[str], *bundles: str, bind: str,
                    extra: tuple[str, ...] = ()) -> tuple[Daemon, str]:
    """:func:`start_worker` through ``prefix`` (e.g. inside a network namespace)."""
    args = ["cloud", "serve", "--bind", bind, *extra]
    for b in bundles:
        args += ["--bundle", b]
    d = NetnsDaemon(prefix, *args)
    line = d.wait_for("serving ")
    return d, line.split()[1]


def curve_keys(root: Path, client: str) -> tuple[Path, Path]:
    """CURVE key pairs for a worker, ``client`` and a ``stranger`` under ``root``,
    with only ``client``'s public key in the allow-list; returns (keys, allowed)."""
    from jetsplit.protocol import generate_keypair

    keys, allowed = root / "keys", root / "keys" / "allowed"
    allowed.mkdir(parents=True)
    for name in ("worker", client, "stranger"):
        generate_keypair(keys, name)
    (allowed / f"{client}.key").write_bytes((keys / f"{client}.key").read_bytes())
    return keys, allowed
