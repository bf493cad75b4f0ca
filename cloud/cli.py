"""``jetsplit cloud serve``: run the cloud worker.

    jetsplit cloud serve --bundle DIR [--bundle DIR ...] --bind tcp://HOST:PORT
                         [--config cloud.toml] [--metrics-port N]
                         [--curve-secret FILE --curve-allow DIR | --insecure]
                         [--max-batch N] [--max-wait-ms X] [--threads N]
                         [--engine-cpus LIST] [--io-cpus LIST]
                         [--queue-requests N] [--queue-mib X] [--rcvhwm N]

Prints the address it serves and the fingerprints it holds, logs the resolved
configuration, and on SIGTERM or SIGINT answers everything it accepted, then exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import zmq

from jetsplit.cloud.config import load_cloud_config
from jetsplit.cloud.placement import parse_cpus
from jetsplit.cloud.worker import Worker
from jetsplit.config import setup_logging
from jetsplit.errors import ConfigError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jetsplit cloud", description="jetsplit cloud worker")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve bundles' cloud stages over ZeroMQ")
    s.add_argument("--bundle", action="append", dest="bundles", help="bundle directory or demo:NAME (repeatable)")
    s.add_argument("--bind", action="append", help="endpoint to bind, e.g. tcp://0.0.0.0:5555 (repeatable)")
    s.add_argument("--config", type=Path, help="cloud.toml")
    s.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (default: off)")
    s.add_argument("--metrics-addr", help="address the metrics endpoint listens on (default 127.0.0.1)")
    s.add_argument("--curve-secret", help="the worker's CURVE secret key file")
    s.add_argument("--curve-allow", help="directory of allowed client public keys")
    s.add_argument("--insecure", action="store_true", default=None,
                   help="serve a non-loopback address without CURVE (refused otherwise)")
    s.add_argument("--max-batch", type=int, help="most requests in one engine batch")
    s.add_argument("--max-wait-ms", type=float, help="longest a request waits for its batch to fill")
    s.add_argument("--threads", type=int, help="engine threads")
    s.add_argument("--intra-op-threads", type=int, help="ONNX Runtime threads per engine")
    s.add_argument("--engine-cpus", help="CPUs for the engine threads, e.g. 1 or 2-3 (default: any)")
    s.add_argument("--io-cpus", help="CPUs for the socket thread, e.g. 0 (default: any)")
    s.add_argument("--queue-requests", type=int, help="requests each (bundle, stage) queue may hold")
    s.add_argument("--queue-mib", type=float, help="MiB the requests of each queue may hold (default: from memory)")
    s.add_argument("--rcvhwm", type=int, help="requests ZeroMQ may buffer per connected edge (default 8)")
    s.add_argument("--backend", help="onnxruntime | tensorrt")
    s.add_argument("--log-level", default="INFO", help="DEBUG | INFO | WARNING | ERROR (default INFO)")
    return p


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    setup_logging(args.log_level)
    flags = {
        "bundles": args.bundles, "bind": args.bind, "metrics_port": args.metrics_port, "metrics_addr": args.metrics_addr,
        "curve_secret": args.curve_secret, "curve_allow": args.curve_allow, "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms, "threads": args.threads, "intra_op_threads": args.intra_op_threads,
        "backend": args.backend, "insecure": args.insecure, "queue_requests": args.queue_requests,
        "queue_mib": args.queue_mib, "rcvhwm": args.rcvhwm,
        "engine_cpus": None if args.engine_cpus is None else parse_cpus(args.engine_cpus, "--engine-cpus"),
        "io_cpus": None if args.io_cpus is None else parse_cpus(args.io_cpus, "--io-cpus"),
    }
    config = load_cloud_config(args.config, os.environ, flags)
    log = logging.getLogger("jetsplit.cloud")
    log.info("config %s", json.dumps(config.describe()))
    worker = Worker(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: draining", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        worker.start()
    except zmq.ZMQError as exc:  # an address in use, or one that cannot be bound here
        worker.close()
        raise ConfigError(f"bind {', '.join(config.bind)}: {exc}") from None
    for fp, served in worker.served.items():
        print(f"bundle {served.bundle.name} {fp}", flush=True)
    print(f"serving {' '.join(worker.endpoints)}", flush=True)
    worker.serve(stop)
    log.info("stopped: accepted %d, answered %d", worker.accepted, worker.answered)
    return 0
