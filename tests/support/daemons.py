"""The real daemons as processes, for the system tests and the benchmarks."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

JETSPLIT = str(Path(sys.executable).with_name("jetsplit"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Daemon:
    """A ``jetsplit ...`` process whose stdout lines are read until a marker.

    A thread reads stdout into a queue, so :meth:`wait_for` keeps its timeout even
    when the daemon hangs without printing a line (a bare ``readline()`` would
    block forever). ``prefix`` runs the command through another (``ip netns exec
    NS``); ``preexec_fn`` runs in the child before exec (CPU pinning); stderr is
    a pipe the caller may read once the process has ended, unless ``stderr`` says
    otherwise.
    """

    def __init__(self, *args: str, env: dict[str, str] | None = None, prefix: Sequence[str] = (),
                 preexec_fn: Callable[[], None] | None = None, stderr: int = subprocess.PIPE) -> None:
        self.proc = subprocess.Popen(
            [*prefix, JETSPLIT, *args], stdout=subprocess.PIPE, stderr=stderr, text=True,
            env={**os.environ, **(env or {})}, preexec_fn=preexec_fn,
        )
        self.lines: list[str] = []
        self._out: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._out.put(line.rstrip("\n"))
        finally:
            self._out.put(None)  # end of output: the process closed stdout or exited

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """The first stdout line starting with ``prefix`` (the daemon's own report)."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self._out.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._out.put(None)  # later calls see the end too
                code = self.proc.wait(10)
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"daemon exited {code} before {prefix!r}: {err[-2000:]}")
            self.lines.append(line)
            if line.startswith(prefix):
                return line
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


def start_worker(*bundles: str, bind: str, extra: Sequence[str] = (), prefix: Sequence[str] = (),
                 timeout: float = 60.0, **daemon: Any) -> tuple[Daemon, str]:
    """A ``jetsplit cloud serve`` process serving ``bundles`` at ``bind``, once it
    reports ``serving``: the daemon and the endpoint it bound (the real port for
    ``tcp://127.0.0.1:*``). ``prefix`` and the other keywords go to :class:`Daemon`."""
    args = ["cloud", "serve", "--bind", bind, *extra]
    for b in bundles:
        args += ["--bundle", b]
    d = Daemon(*args, prefix=prefix, **daemon)
    try:
        line = d.wait_for("serving ", timeout)
    except BaseException:
        if d.proc.poll() is None:
            d.proc.kill()
        raise
    return d, line.split()[1]


def start_worker_in(prefix: Sequence[str], *bundles: str, bind: str,
                    extra: tuple[str, ...] = ()) -> tuple[Daemon, str]:
    """:func:`start_worker` through ``prefix`` (e.g. inside a network namespace;
    ``ip netns exec`` execs in place, so ``pid`` and signals reach ``jetsplit``)."""
    return start_worker(*bundles, bind=bind, extra=extra, prefix=prefix)


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
