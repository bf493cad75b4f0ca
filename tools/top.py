"""``jetsplit top``: a live view of a running edge agent.

    jetsplit top ENDPOINT [--interval 2] [--once [--wait 10]] [--json]
    jetsplit top http://WORKER:METRICS_PORT/ [--interval 2] [--once] [--json]

Subscribes to the results an agent publishes with ``--sink zmq-pub:ENDPOINT``
(``jetsplit.edge.sinks.ZmqPubSink``: one JSON :class:`FrameResult` per frame) and,
every interval, shows that window's frames per second, offload rate (frames that
sent anything up), which share the edge, the cloud and the fallback answered,
latency p50/p95 (capture to result), bytes sent per frame and the uplink rate,
energy per frame when the agent attributes any, how many frames exited at
each stage, and the field monitor's alarms (drift, shadow audit) when any is on. With several sources (cameras), one line per source gives its frame
rate, offload rate, fallback share and p95 latency (``sources`` in ``--json``). The figures are the agent's own end-of-run summary
(:class:`~jetsplit.edge.agent.AgentStats`) over the window. No accuracy: live
frames carry no labels.

It only listens, so it can attach to and leave a running agent at any time; PUB
drops what a slow subscriber does not take, so a frame count can fall short, never
over. ``ENDPOINT`` is what the agent binds (``ipc:///run/jetsplit/results``,
``tcp://board:5556``); a ``zmq-pub:`` prefix, as in the agent's flag, is accepted.

``--once`` waits up to ``--wait`` seconds for the first result, prints the window
that starts there and exits (1 if nothing came). Otherwise the view is redrawn in
place on a terminal, or printed window after window into a pipe; ``--json``
prints one JSON object per window and line. Ctrl-C ends it.

Given a cloud worker's metrics URL instead (``http://...``, its ``metrics_port``),
it shows the worker's side (jetsplit.tools.top_worker): goodput, what it refused
``OVERLOADED`` and answered ``EXPIRED`` by reason, and its queues.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import zmq

from jetsplit.edge.agent import AgentStats
from jetsplit.edge.sinks import FrameResult
from jetsplit.errors import ConfigError

__all__ = ["SourceRates", "Subscriber", "Window", "format_window", "main", "summarize"]

_CLEAR = "\x1b[H\x1b[2J"


class Subscriber:
    """A SUB socket on an agent's result sink; decodes what arrives into results.
    Messages that are not results (another publisher on the endpoint, a newer
    agent's fields are fine) are counted in ``bad`` and skipped."""

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None) -> None:
        self.endpoint = endpoint.removeprefix("zmq-pub:").lstrip("@>")
        if not self.endpoint:
            raise ConfigError(f"ENDPOINT: expected a ZeroMQ endpoint such as ipc:///run/jetsplit/results, got {endpoint!r}")
        if "://" not in self.endpoint:
            # A socket file's path alone: libzmq would say only "Invalid argument".
            hint = f"; for the socket file, write ipc://{self.endpoint}" if self.endpoint.startswith("/") else ""
            raise ConfigError(f"ENDPOINT {endpoint!r}: expected a ZeroMQ endpoint such as "
                              f"ipc:///run/jetsplit/results or tcp://HOST:PORT{hint}")
        self._sock = (context or zmq.Context.instance()).socket(zmq.SUB)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.setsockopt(zmq.SUBSCRIBE, b"")
        try:
            self._sock.connect(self.endpoint)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise ConfigError(f"ENDPOINT {endpoint!r}: cannot connect: {exc}") from None
        self.bad = 0

    def receive(self, seconds: float) -> list[FrameResult]:
        """Every result that arrives in the next ``seconds``."""
        end = time.monotonic() + seconds
        out: list[FrameResult] = []
        while (left := end - time.monotonic()) > 0:
            if self._sock.poll(max(1, int(left * 1000))):
                self._drain(out)
        return out

    def first(self, seconds: float) -> list[FrameResult]:
        """Waits up to ``seconds`` for results; returns as soon as any arrive."""
        end = time.monotonic() + seconds
        out: list[FrameResult] = []
        while not out and (left := end - time.monotonic()) > 0:
            if self._sock.poll(max(1, int(left * 1000))):
                self._drain(out)
        return out

    def _drain(self, out: list[FrameResult]) -> None:
        while True:
            try:
                msg = self._sock.recv(zmq.NOBLOCK)
            except zmq.Again:
                return
            try:
                out.append(FrameResult.from_json(msg))
            except (ValueError, TypeError, AttributeError):  # not JSON, not an object, wrong fields
                self.bad += 1

    def close(self) -> None:
        self._sock.close(0)


@dataclass(frozen=True)
class SourceRates:
    """One source's figures in a window; shares are fractions of its frames."""

    frames: int
    fps: float
    offload_rate: float
    cloud: float
    fallback: float
    p95_ms: float


@dataclass(frozen=True)
class Window:
    """One window's figures; shares are fractions of ``frames``. Latencies, and
    energy when no frame carried any, are None for an empty window."""

    endpoint: str
    seconds: float
    frames: int
    fps: float
    offload_rate: float
    edge: float
    cloud: float
    fallback: float
    p50_ms: float | None
    p95_ms: float | None
    bytes_per_frame: float
    uplink_kbit_s: float
    energy_mj_per_frame: float | None
    exits: dict[str, int]
    fallback_reasons: dict[str, int]
    ignored_messages: int = 0
    alarm: str | None = None  # the field monitor's alarms at the window's last frame
    sources: dict[str, SourceRates] = field(default_factory=dict)  # by source_id, when results carry one

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def summarize(results: Sequence[FrameResult], seconds: float, endpoint: str = "", ignored: int = 0) -> Window:
    """The figures of ``results`` received over ``seconds``."""
    stats = AgentStats()
    for r in results:
        stats.add(r)
    # The agent counts offloads when it sends them; a result says so by its bytes.
    for r in results:
        if r.bytes_up > 0:
            stats.count_offload(r.source_id)
    s = stats.summary()
    n = len(results)

    def share(count: int) -> float:
        return count / n if n else 0.0

    return Window(
        endpoint=endpoint, seconds=seconds, frames=n, fps=n / seconds if seconds > 0 else 0.0,
        offload_rate=s["offload_fraction"], edge=share(stats.edge), cloud=share(stats.cloud),
        fallback=share(stats.fallback),
        p50_ms=s["p50_ms"] if n else None, p95_ms=s["p95_ms"] if n else None,
        bytes_per_frame=s["bytes_up_per_frame"],
        uplink_kbit_s=stats.bytes_up * 8 / 1000 / seconds if seconds > 0 else 0.0,
        energy_mj_per_frame=s["energy_mj_per_frame"] if any(r.energy_mj > 0 for r in results) else None,
        exits=s["exits"], fallback_reasons=s["fallback_reasons"], ignored_messages=ignored,
        alarm=results[-1].alarm if results else None,
        sources={sid: _rates(sub, seconds) for sid, sub in sorted(stats.sources.items()) if sid},
    )


def _rates(stats: AgentStats, seconds: float) -> SourceRates:
    s = stats.summary()
    n = max(stats.frames, 1)
    return SourceRates(frames=stats.frames, fps=stats.frames / seconds if seconds > 0 else 0.0,
                       offload_rate=stats.offloaded / n, cloud=stats.cloud / n, fallback=stats.fallback / n,
                       p95_ms=s["p95_ms"])


def format_window(w: Window) -> str:
    head = f"jetsplit top {w.endpoint}  window {w.seconds:.1f} s"
    if not w.frames:
        return (f"{head}\nno results in this window (is an agent running with "
                f"--sink zmq-pub:{w.endpoint}?)")
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(w.fallback_reasons.items(), key=lambda kv: -kv[1]))
    lines = [
        head,
        f"frames/s      {w.fps:8.1f}   ({w.frames} frames)",
        f"offload rate  {100 * w.offload_rate:7.1f}%",
        f"answered      edge {100 * w.edge:.1f}%  cloud {100 * w.cloud:.1f}%  fallback {100 * w.fallback:.1f}%"
        + (f"  ({reasons})" if reasons else ""),
        f"latency       p50 {w.p50_ms:.1f} ms  p95 {w.p95_ms:.1f} ms",
        f"uplink        {w.bytes_per_frame:,.0f} B/frame  {w.uplink_kbit_s:,.1f} kbit/s",
    ]
    if w.energy_mj_per_frame is not None:
        lines.append(f"energy        {w.energy_mj_per_frame:.2f} mJ/frame")
    lines.append("exits         " + "  ".join(f"{k} {v}" for k, v in w.exits.items()))
    if w.alarm:
        lines.append(f"ALARM         {w.alarm} (the edge may be wrong: see the agent's log)")
    if len(w.sources) > 1:
        width = max(len(sid) for sid in w.sources)
        lines.append(f"{'source':<{width}}  frames/s  offload  cloud  fallback  p95 ms")
        lines += [f"{sid:<{width}}  {r.fps:8.1f}  {100 * r.offload_rate:6.1f}%  {100 * r.cloud:4.1f}%  "
                  f"{100 * r.fallback:7.1f}%  {r.p95_ms:6.1f}" for sid, r in w.sources.items()]
    if w.ignored_messages:
        lines.append(f"ignored {w.ignored_messages} messages that were not results")
    return "\n".join(lines)


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="jetsplit top", description="live view of a running edge agent or cloud worker")
    p.add_argument("endpoint", help="the agent's zmq-pub sink endpoint, e.g. ipc:///run/jetsplit/results, "
                                    "or a worker's metrics URL, e.g. http://127.0.0.1:9100/")
    p.add_argument("--interval", type=float, default=2.0, help="seconds per window (default 2)")
    p.add_argument("--once", action="store_true", help="print one window and exit")
    p.add_argument("--wait", type=float, default=10.0, help="with --once: seconds to wait for a first result (default 10)")
    p.add_argument("--json", action="store_true", help="one JSON object per window")
    args = p.parse_args(list(argv))
    if not args.interval > 0:
        raise ConfigError(f"--interval: expected seconds > 0, got {args.interval:g}")
    if not args.wait >= 0:
        raise ConfigError(f"--wait: expected seconds >= 0, got {args.wait:g}")
    redraw = not args.json and not args.once and sys.stdout.isatty()
    if args.endpoint.startswith(("http://", "https://")):
        return _worker_view(args.endpoint, args.interval, args.once, args.json, redraw)
    sub = Subscriber(args.endpoint)
    try:
        if args.once:
            results = sub.first(args.wait)
            if not results:
                print(f"jetsplit top: no results on {sub.endpoint} within {args.wait:g} s "
                      f"(is an agent running with --sink zmq-pub:{sub.endpoint}?)", file=sys.stderr)
                return 1
            # The window starts at the first result, so it is a full one.
            results += sub.receive(args.interval)
            window = summarize(results, args.interval, sub.endpoint, sub.bad)
            print(json.dumps(window.to_json()) if args.json else format_window(window))
            return 0
        while True:
            t0, bad = time.monotonic(), sub.bad
            results = sub.receive(args.interval)
            _emit(summarize(results, time.monotonic() - t0, sub.endpoint, sub.bad - bad), args.json, redraw)
    except KeyboardInterrupt:  # the way out of a live view: not an error
        return 0
    finally:
        sub.close()


def _emit(window: Window, as_json: bool, redraw: bool) -> None:
    _show(window.to_json(), format_window(window), as_json, redraw)


def _show(record: dict[str, Any], text: str, as_json: bool, redraw: bool) -> None:
    if as_json:
        print(json.dumps(record), flush=True)
    elif redraw:
        print(_CLEAR + text, flush=True)
    else:  # into a pipe or a file: one block per window, a blank line between
        print(text + "\n", flush=True)


def _worker_view(url: str, interval: float, once: bool, as_json: bool, redraw: bool) -> int:
    """A cloud worker's figures from its metrics, window after window."""
    from jetsplit.tools.top_worker import format_worker_window, watch

    try:
        while True:
            w = watch(url, interval)
            _show(w.to_json(), format_worker_window(w), as_json, redraw)
            if once:
                return 0
    except KeyboardInterrupt:
        return 0
