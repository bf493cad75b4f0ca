"""A worker without an engine, for tests and benchmarks.

It answers ``ping`` with ``pong`` and every ``infer`` with a ``result`` whose scores
are a fixed descending distribution over ``num_classes`` (so top-k has a defined
answer), ``stage`` = the requested stage, and, when ``echo_tensors``, the decoded
tensors sent back ``raw``: the client then sees exactly what the server decoded.

    python -m jetsplit.protocol.echo tcp://127.0.0.1:5555
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import security
from .codec import DEFAULT_LIMITS, Frame, Limits, result_for
from .messages import InferRequest, Result
from .transport import DEFAULT_OPTIONS, OutFrame, Request, Server, SocketOptions

__all__ = ["EchoServer", "main"]


class EchoServer:
    """An echo server running :meth:`Server.serve` on a background thread.

    Use as a context manager; ``endpoint`` is the resolved bound endpoint (handy
    with ``tcp://127.0.0.1:*``).
    """

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        bundles: Sequence[str] = (),
        curve: security.CurveServer | None = None,
        limits: Limits = DEFAULT_LIMITS,
        options: SocketOptions = DEFAULT_OPTIONS,
        num_classes: int = 10,
        echo_tensors: bool = True,
    ) -> None:
        self.server = Server(
            endpoints, bundles=bundles, name="jetsplit-echo", limits=limits, options=options, curve=curve
        )
        self.endpoint = self.server.last_endpoint
        scores = np.arange(num_classes, 0, -1, dtype=np.float64)
        self.scores = scores / scores.sum()
        self._score_list: list[float] = self.scores.tolist()
        self.echo_tensors = echo_tensors
        self.requests = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def handle(self, header: InferRequest, tensors: dict[str, np.ndarray[Any, Any]]) -> tuple[Result, list[Frame]]:
        """The reply to one request."""
        self.requests += 1
        return result_for(header, self.scores, header.stage, tensors=tensors if self.echo_tensors else None)

    def handle_request(self, request: Request) -> tuple[Result, Sequence[OutFrame]]:
        """:meth:`handle`, sending ``raw`` payloads back as the frames they came in.

        A raw, uncompressed payload decodes to exactly its bytes, so the received
        frame is the echo: libzmq sends it again by reference count instead of
        pyzmq wrapping a new buffer (the same as a bare pyzmq echo does). Other
        encodings are decoded and re-encoded ``raw`` by :meth:`handle`.
        """
        header = request.header
        assert isinstance(header, InferRequest)  # Server.serve_requests passes infer requests only
        descs = header.tensors
        if not self.echo_tensors or header.top_k or len(request.payloads) != len(descs):
            return self.handle(header, request.tensors)
        for d in descs:
            if d.encoding != "raw" or d.compression != "none":
                return self.handle(header, request.tensors)
        self.requests += 1
        reply = Result(
            v=header.v, id=header.id, stage=header.stage, scores=self._score_list, tensors=list(descs),
            queue_ms=(time.monotonic() - request.received_at) * 1000.0,
        )
        return reply, request.payloads

    def start(self) -> EchoServer:
        """Serve on a daemon thread until :meth:`stop`."""
        self._thread = threading.Thread(target=self._run, name="jetsplit-echo", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            self.server.serve_requests(self.handle_request, self._stop, poll_ms=50)
        finally:
            # The socket belongs to this thread: close it here, not in stop().
            self.server.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop serving and close the socket (the endpoint is free afterwards)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                raise RuntimeError("echo server thread did not stop")
            self._thread = None
        else:
            self.server.close()

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run an echo server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m jetsplit.protocol.echo", description=__doc__.split("\n")[0])
    parser.add_argument("endpoints", nargs="+", help="endpoints to bind, e.g. tcp://127.0.0.1:5555")
    parser.add_argument("--bundle", action="append", default=[], help="fingerprint to report in pongs")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--no-echo", action="store_true", help="acknowledge without sending tensors back")
    parser.add_argument("--server-key", help="CURVE: this server's .key_secret file")
    parser.add_argument("--allowed-clients", help="CURVE: directory of allowed client .key files")
    args = parser.parse_args(argv)
    curve = None
    if args.server_key or args.allowed_clients:
        if not (args.server_key and args.allowed_clients):
            parser.error("--server-key and --allowed-clients go together")
        from pathlib import Path

        curve = security.CurveServer(Path(args.server_key), Path(args.allowed_clients))
    logging.basicConfig(level=logging.INFO)
    echo = EchoServer(
        args.endpoints, bundles=args.bundle, curve=curve, num_classes=args.classes, echo_tensors=not args.no_echo
    )
    logging.getLogger(__name__).info("echo server on %s", echo.endpoint)
    stop = threading.Event()
    try:
        echo.server.serve_requests(echo.handle_request, stop)
    except KeyboardInterrupt:
        pass
    finally:
        echo.server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
