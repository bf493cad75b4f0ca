"""systemd integration without libsystemd: ``sd_notify`` over ``NOTIFY_SOCKET``.

Both daemons (edge agent, cloud worker) run as ``Type=notify`` services: they send
``READY=1`` once they serve, ``WATCHDOG=1`` at half the ``WATCHDOG_USEC`` interval
from their main loop (so a wedged loop gets restarted), and ``STOPPING=1`` when
they drain. Outside systemd (no ``NOTIFY_SOCKET``) every call is a no-op.
"""

from __future__ import annotations

import os
import socket
import time

__all__ = ["Notifier"]


class Notifier:
    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = env.get("NOTIFY_SOCKET") or None
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        enabled = usec is not None and usec.isdigit() and int(usec) > 0
        if enabled and pid and pid.isdigit() and int(pid) != os.getpid():
            enabled = False  # the watchdog is meant for another process
        self.watchdog_interval = int(usec) / 2e6 if enabled and usec else None
        self._last_ping = 0.0

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, state: str) -> bool:
        if self.address is None:
            return False
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]  # abstract namespace
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.connect(addr)
                sock.sendall(state.encode())
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def tick(self, now: float | None = None) -> bool:
        """Send ``WATCHDOG=1`` if half the watchdog interval has passed."""
        if self.watchdog_interval is None:
            return False
        t = time.monotonic() if now is None else now
        if t - self._last_ping < self.watchdog_interval:
            return False
        self._last_ping = t
        return self.notify("WATCHDOG=1")
