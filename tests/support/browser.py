"""A page rendered in headless Chromium: its screenshot and every error it logged.

Chromium is driven over the DevTools protocol on a pipe (``--remote-debugging-pipe``:
JSON messages ended by a NUL byte, commands on the child's fd 3, replies and
events on its fd 4), so no extra package is needed. Errors are what a person
would see in the browser's console: ``console.error`` and ``console.assert``
calls, uncaught exceptions, and the browser's own error entries (a resource that
failed to load, a blocked request). Installed from Debian's ``chromium`` by
tests/support/browser_setup.sh (``make unit``).
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Page", "chromium", "render"]


def chromium() -> str | None:
    """The Chromium executable, or None when it is not installed."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class Page:
    png: bytes
    errors: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)


class _DevTools:
    def __init__(self, exe: str, profile: str) -> None:
        to_child_r, self._w = os.pipe()
        self._r, from_child_w = os.pipe()

        def fds() -> None:
            # The protocol's fixed descriptors: 3 (commands in), 4 (messages out).
            # dup2 makes inheritable copies; the pipes themselves close on exec.
            a, b = os.dup(to_child_r), os.dup(from_child_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=fds,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def _read(self, until: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = until - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"Chromium exited ({self.proc.poll()})")
            self._buf += chunk
        msg, self._buf = self._buf.split(b"\0", 1)
        out: dict[str, Any] = json.loads(msg)
        return out

    def call(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 60.0) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        until = time.monotonic() + timeout
        while True:
            got = self._read(until)
            if got.get("id") == self._next:
                if "error" in got:
                    raise RuntimeError(f"{method}: {got['error']}")
                result: dict[str, Any] = got.get("result", {})
                return result
            self.events.append(got)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict[str, Any]:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        until = time.monotonic() + timeout
        while True:
            got = self._read(until)
            if got.get("method") == method:
                return got
            self.events.append(got)

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (RuntimeError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self._w)
        os.close(self._r)


def _text(args: list[dict[str, Any]]) -> str:
    return " ".join(str(a.get("value", a.get("description", ""))) for a in args)


def render(url: str, width: int = 1200, timeout: float = 60.0) -> Page:
    """Load ``url``, wait for its load event, and shoot the whole page."""
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (tests/support/browser_setup.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="jetsplit-chromium-") as profile:
        tools = _DevTools(exe, profile)
        try:
            target = tools.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                tools.call(f"{domain}.enable", session=session)
            metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": False}
            tools.call("Emulation.setDeviceMetricsOverride", metrics, session=session)
            tools.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
            tools.wait_event("Page.loadEventFired", timeout)
            height = int(tools.call("Page.getLayoutMetrics", session=session)["cssContentSize"]["height"])
            tools.call("Emulation.setDeviceMetricsOverride", {**metrics, "height": max(height, 1)}, session=session)
            shot = tools.call("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                              session=session, timeout=timeout)
            page = Page(base64.b64decode(shot["data"]))
            for ev in tools.events:
                method, params = ev.get("method"), ev.get("params", {})
                if method == "Runtime.consoleAPICalled":
                    line = f"console.{params.get('type')}: {_text(params.get('args', []))}"
                    page.console.append(line)
                    if params.get("type") in ("error", "assert"):
                        page.errors.append(line)
                elif method == "Runtime.exceptionThrown":
                    details = params.get("exceptionDetails", {})
                    page.errors.append(f"exception: {details.get('exception', {}).get('description') or details.get('text')}")
                elif method == "Log.entryAdded":
                    entry = params.get("entry", {})
                    if entry.get("level") == "error":
                        page.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())
            return page
        finally:
            tools.close()
