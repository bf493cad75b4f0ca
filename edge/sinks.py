"""Where results go: one :class:`FrameResult` per frame, to one or more sinks.

    ====================  ====================================================
    ``stdout``            one JSON object per line on standard output
    ``jsonl:PATH``        the same, appended to a file (flushed per line)
    ``zmq-pub:ENDPOINT``  a ZeroMQ PUB socket, one single-frame JSON message per
                          result; binds ``ENDPOINT`` (``@ENDPOINT`` too), or
                          connects with ``>ENDPOINT`` (to an XSUB proxy)
    ``queue``             a :class:`QueueSink`: iterate it from Python
    ====================  ====================================================

    >>> sink = open_sinks(["stdout", "zmq-pub:ipc:///tmp/jetsplit.results"])   # doctest: +SKIP
    >>> sink.write(result); sink.close()

A subscriber on the board::

    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.connect("ipc:///tmp/jetsplit.results"); sub.subscribe(b"")
    result = FrameResult.from_json(sub.recv())

Each line starts with its ``source_id``: one camera's results are
``sub.subscribe(b'{"source_id":"gate",')`` (ZeroMQ filters by prefix).

Sinks never block the edge loop for long: PUB drops messages for subscribers
that do not keep up (ZeroMQ's high-water mark), and :class:`MultiSink` keeps
the others writing when one fails (it logs the failure once and counts it).
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal

import zmq

from jetsplit.errors import ConfigError

__all__ = [
    "WHERE",
    "FrameResult",
    "JsonLinesSink",
    "MultiSink",
    "QueueSink",
    "Sink",
    "ZmqPubSink",
    "open_sink",
    "open_sinks",
]

log = logging.getLogger(__name__)

Where = Literal["edge", "cloud", "fallback"]
WHERE: tuple[str, ...] = ("edge", "cloud", "fallback")


@dataclass
class FrameResult:
    """The answer for one frame.

    ``stage`` names the stage that answered; ``where`` is ``edge`` (an edge gate
    accepted), ``cloud`` (the cloud answered in time) or ``fallback`` (it should
    have gone to the cloud but did not answer in time, or could not be asked: the
    best edge answer; ``reason`` says why). ``latency_ms`` is capture to result;
    ``bytes_up`` what was sent for it; ``energy_mj`` the energy attributed to it,
    of which ``radio_mj`` sending it (shown when not 0);
    ``truth`` the label when the source has one; ``t_capture`` is
    ``time.monotonic()`` at capture; ``alarm`` names the field monitor's alarms
    active at the time (``drift:STAGE@SOURCE``, ``audit``), else None.
    """

    frame: int
    class_id: int
    label: str
    score: float
    stage: str
    where: Where
    latency_ms: float
    bytes_up: int = 0
    energy_mj: float = 0.0
    truth: str | None = None
    t_capture: float = 0.0
    source_id: str = ""
    threshold: float | None = None
    reason: str | None = None
    radio_mj: float = 0.0
    alarm: str | None = None  # field-monitor alarms active when it was answered (drift, audit)

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"FrameResult.where: expected one of {WHERE}, got {self.where!r}")

    @property
    def correct(self) -> bool | None:
        return None if self.truth is None else self.label == self.truth

    def to_dict(self) -> dict[str, Any]:
        # Every field is a scalar or a string: a shallow copy (asdict deep-copies
        # each one, which cost more than the JSON encoding on a board's loop).
        d = {name: getattr(self, name) for name in _FIELDS}
        # numpy scalars from the chain are not JSON: make them plain Python.
        for key in ("frame", "class_id", "bytes_up"):
            d[key] = int(d[key])
        for key in ("score", "latency_ms", "energy_mj", "t_capture"):
            d[key] = float(d[key])
        if d["threshold"] is not None:
            d["threshold"] = float(d["threshold"])
        # Optional fields only when set: a line per frame should stay short.
        for key in ("truth", "threshold", "reason", "alarm"):
            if d[key] is None:
                del d[key]
        if not self.source_id:
            del d["source_id"]
        if d["radio_mj"]:
            d["radio_mj"] = float(d["radio_mj"])
        else:
            del d["radio_mj"]
        return d

    def to_json(self) -> str:
        """One line of JSON (no newline), floats rounded to what is meaningful."""
        d = self.to_dict()
        d["score"] = round(float(d["score"]), 6)
        d["latency_ms"] = round(float(d["latency_ms"]), 3)
        d["energy_mj"] = round(float(d["energy_mj"]), 3)
        if "radio_mj" in d:
            d["radio_mj"] = round(d["radio_mj"], 3)
        d["t_capture"] = round(float(d["t_capture"]), 6)
        if "source_id" in d:
            # First, so that a ZeroMQ subscriber can take one camera's results by
            # prefix: subscribe(b'{"source_id":"gate",').
            d = {"source_id": d.pop("source_id"), **d}
        return json.dumps(d, separators=(",", ":"), ensure_ascii=False, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FrameResult:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_json(cls, text: str | bytes) -> FrameResult:
        return cls.from_dict(json.loads(text))


_FIELDS = tuple(f.name for f in fields(FrameResult))


class Sink(ABC):
    """Takes results; ``close()`` flushes. Usable as a context manager."""

    spec: str = ""

    @abstractmethod
    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None:  # noqa: B027 (optional hook)
        """Flush and release."""

    def __enter__(self) -> Sink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class JsonLinesSink(Sink):
    """One JSON object per line, to a file (appended) or a stream (stdout)."""

    def __init__(self, target: str | Path | IO[str]) -> None:
        if isinstance(target, (str, Path)):
            path = Path(target)
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._fh: IO[str] = open(path, "a", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"sink jsonl:{path}: cannot open for writing: {exc.strerror}") from None
            self._owned = True
            self.spec = f"jsonl:{path}"
        else:
            self._fh, self._owned, self.spec = target, False, "stdout"
        self._lock = threading.Lock()
        self.written = 0

    def write(self, result: FrameResult) -> None:
        line = result.to_json() + "\n"
        with self._lock:
            self._fh.write(line)
            # Per line, so a reader tailing the file (or a pipe) sees each frame.
            self._fh.flush()
            self.written += 1

    def close(self) -> None:
        with self._lock:
            if self._owned and not self._fh.closed:
                self._fh.close()
            elif not self._owned:
                self._fh.flush()


class ZmqPubSink(Sink):
    """A PUB socket; each result is one single-frame JSON message."""

    def __init__(self, endpoint: str, context: zmq.Context[Any] | None = None, hwm: int = 1000, linger_ms: int = 500) -> None:
        connect = endpoint.startswith(">")
        address = endpoint.lstrip(">@")
        self.spec = f"zmq-pub:{endpoint}"
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PUB)
        self._sock.setsockopt(zmq.SNDHWM, hwm)
        # Results still queued at close get this long to leave, not forever.
        self._sock.setsockopt(zmq.LINGER, linger_ms)
        try:
            if connect:
                self._sock.connect(address)
            else:
                self._sock.bind(address)
        except zmq.ZMQError as exc:
            self._sock.close(0)
            raise ConfigError(f"sink {self.spec}: cannot {'connect' if connect else 'bind'}: {exc}") from None
        self.endpoint = self._sock.getsockopt_string(zmq.LAST_ENDPOINT) if not connect else address
        self._lock = threading.Lock()  # zmq sockets are not thread-safe
        self.sent = 0
        self.dropped = 0

    def write(self, result: FrameResult) -> None:
        with self._lock:
            try:
                self._sock.send(result.to_json().encode("utf-8"), zmq.NOBLOCK)
                self.sent += 1
            except zmq.Again:
                self.dropped += 1

    def close(self) -> None:
        with self._lock:
            self._sock.close()


class QueueSink(Sink):
    """Results for Python code: iterate it (ends after ``close()``) or ``get``.

    Unbounded by default; with ``maxsize`` the oldest result is dropped (and
    counted) when full, so a consumer that stops reading cannot stall the agent.
    """

    _END = object()

    def __init__(self, maxsize: int = 0) -> None:
        self.spec = "queue"
        self._q: queue.Queue[Any] = queue.Queue()
        self._maxsize = maxsize
        self.dropped = 0
        self._closed = False

    def write(self, result: FrameResult) -> None:
        if self._maxsize and self._q.qsize() >= self._maxsize:
            try:
                self._q.get_nowait()
                self.dropped += 1
            except queue.Empty:
                pass
        self._q.put(result)

    def get(self, timeout: float | None = None) -> FrameResult | None:
        """The next result; None once closed and drained. Raises queue.Empty on timeout."""
        item = self._q.get(timeout=timeout)
        if item is self._END:
            self._q.put(self._END)  # every later reader sees the end too
            return None
        return item  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[FrameResult]:
        while (item := self.get()) is not None:
            yield item

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._q.put(self._END)


class MultiSink(Sink):
    """Writes every result to each sink; one failing sink does not stop the
    others (its first error is logged, all are counted in ``errors``)."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)
        self.spec = ", ".join(s.spec for s in self.sinks)
        self.errors: dict[str, int] = {}

    def write(self, result: FrameResult) -> None:
        for sink in self.sinks:
            try:
                sink.write(result)
            except Exception as exc:
                count = self.errors.get(sink.spec, 0)
                if count == 0:
                    log.error("sink %s failed (further failures are counted, not logged): %s", sink.spec, exc)
                self.errors[sink.spec] = count + 1

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as exc:
                log.error("sink %s: close failed: %s", sink.spec, exc)


def open_sink(spec: str, context: zmq.Context[Any] | None = None) -> Sink:
    """A sink from its spec (see the module docstring)."""
    kind, sep, arg = spec.partition(":")
    if spec == "stdout" or spec == "-":
        return JsonLinesSink(sys.stdout)
    if spec == "queue":
        return QueueSink()
    if sep and kind == "jsonl" and arg:
        return JsonLinesSink(arg)
    if sep and kind == "zmq-pub" and arg:
        return ZmqPubSink(arg, context)
    raise ConfigError(f"sink: expected stdout, jsonl:PATH, zmq-pub:ENDPOINT or queue, got {spec!r}")


def open_sinks(specs: Iterable[str], context: zmq.Context[Any] | None = None) -> MultiSink:
    """Several sinks behind one; closes the opened ones if a later spec fails."""
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(open_sink(spec, context))
    except BaseException:
        for sink in opened:
            sink.close()
        raise
    return MultiSink(opened)
