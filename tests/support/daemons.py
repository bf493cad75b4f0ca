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
from typing import IO, Any

__all__ = ["JETSPLIT", "Daemon", "Lines", "curve_keys", "rss_kib", "start_worker", "start_worker_in"]

JETSPLIT = str(Path(sys.executable).with_name("jetsplit"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


class Lines:
    """A process's output, line by line, read by a thread so that waiting for a
    line keeps its timeout even when the process hangs without printing one (a
    bare ``readline()`` would block forever)."""

    def __init__(self, stream: IO[str] | None) -> None:
        self._queue: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str] | None) -> None:
        try:
            for line in stream or ():  # ends when the process closes it or exits
                self._queue.put(line.rstrip("\n"))
        finally:
            self._queue.put(None)

    def expect(self, prefix: str, timeout: float, seen: list[str] | None = None) -> str | None:
        """The next line starting with ``prefix`` (every line read goes to
        ``seen``); None once the output has ended; TimeoutError after ``timeout`` s."""
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._queue.put(None)  # later calls see the end too
                return None
            if seen is not None:
                seen.append(line)
            if line.startswith(prefix):
                return line
        raise TimeoutError(f"no line starting with {prefix!r} within {timeout}s: {(seen or [])[-20:]}")


class Daemon:
    """A ``jetsplit ...`` process whose stdout lines are read until a marker.

    Its stdout is read through :class:`Lines`, so :meth:`wait_for` keeps its
    timeout even when the daemon hangs without printing a line. ``prefix`` runs the command through another (``ip netns exec
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
        self._out = Lines(self.proc.stdout)

    def wait_for(self, prefix: str, timeout: float = 60.0) -> str:
        """The first stdout line starting with ``prefix`` (the daemon's own report)."""
        line = self._out.expect(prefix, timeout, self.lines)
        if line is None:
            code = self.proc.wait(10)
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"daemon exited {code} before {prefix!r}: {err[-2000:]}")
        return line

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
