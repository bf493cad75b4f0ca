"""``jetsplit edge run``: run the edge agent.

    jetsplit edge run --bundle DIR --cloud tcp://HOST:PORT --source URI [--source URI ...] [--sink SPEC ...]
                      [--config edge.toml] [--latency-budget-ms X] [--max-offload-rate R]
                      [--power-budget-w W] [--offload auto|activations|frames|none]
                      [--status-interval-s S]
                      [--curve-secret FILE --curve-server-key FILE | --insecure] [--max-batch N] [--max-wait-ms MS]
                      [--shadow-rate R] [--field-trace PATH [--field-frames DIR]]

``--source`` may be given once per camera (or ``[[sources]]`` in edge.toml, with
names); results carry ``source_id`` and each source's own ``frame`` numbers.

Results go to the sinks (default: stdout, one JSON object per frame); the summary
goes to stderr at the end. SIGTERM or SIGINT finishes the frames in flight, then
exits 0; so does the end of the input (every file source read; cameras are
retried until the agent is stopped). A source that cannot be read is logged and
the others go on; when none can be read at all, one line says why, exit 2.
SIGHUP re-reads the budgets (``[budget]`` of ``--config``, then the environment
and the flags, as at start) and applies them from the controller's next update;
a file that no longer parses is logged in one line and the budgets in force stay.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from jetsplit.config import setup_logging
from jetsplit.edge.agent import EdgeAgent
from jetsplit.edge.config import OFFLOAD_MODES, EdgeConfig, load_edge_config
from jetsplit.edge.power import parse_source
from jetsplit.edge.streams import MuxConfig, SourceSpec
from jetsplit.errors import JetsplitError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jetsplit edge", description="jetsplit edge agent")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a bundle's edge stages on a source")
    r.add_argument("--bundle", help="bundle directory or demo:NAME")
    r.add_argument("--cloud", action="append", help="worker endpoint (repeatable)")
    r.add_argument("--source", action="append",
                   help="csi://N | v4l2:///dev/videoN | rtsp://... | a video file | a folder of images "
                        "(repeatable: one per camera)")
    r.add_argument("--sink", action="append", dest="sinks", help="stdout | jsonl:PATH | zmq-pub:ENDPOINT (repeatable)")
    r.add_argument("--config", type=Path, help="edge.toml (flags override it, and JETSPLIT_EDGE_* variables)")
    r.add_argument("--latency-budget-ms", type=float, help="budget controller: p95 capture-to-result latency")
    r.add_argument("--max-offload-rate", type=float, help="budget controller: most frames offloaded, 0..1")
    r.add_argument("--power-budget-w", type=float, help="budget controller: mean board power")
    r.add_argument("--power-source", help="auto | jtop | sysfs[:ROOT] | model (overrides [power] source)")
    r.add_argument("--offload", choices=OFFLOAD_MODES,
                   help="what may leave the board (default auto: frames if the bundle's cloud stage needs them, "
                        "else activations)")
    r.add_argument("--deadline-ms", type=float, help="capture to result for offloaded frames (default 150)")
    r.add_argument("--window", type=int, help="requests in flight at most (default 8)")
    r.add_argument("--realtime", action="store_true", default=None, help="pace file sources like a camera")
    r.add_argument("--fps", type=float, help="with --realtime: frames per second (default: the video's, or 30)")
    r.add_argument("--curve-secret", help="the edge's CURVE secret key file")
    r.add_argument("--curve-server-key", help="the worker's CURVE public key file")
    r.add_argument("--insecure", action="store_true", default=None,
                   help="offload to a non-loopback worker without CURVE (refused otherwise)")
    r.add_argument("--shadow-rate", type=float,
                   help="share of edge-accepted frames also sent to the cloud to audit the edge (0..1)")
    r.add_argument("--field-trace", metavar="PATH",
                   help="record offloaded and audited frames, labelled by the cloud, for `jetsplit tune`")
    r.add_argument("--field-frames", metavar="DIR", help="also save those frames here (offload = frames only)")
    r.add_argument("--max-batch", type=int, help="frames per batch through the edge stages, at most")
    r.add_argument("--max-wait-ms", type=float, help="how long a batch waits to fill")
    r.add_argument("--status-interval-s", type=float, metavar="S",
                   help="log a status line (fps, offload rate, fallbacks by reason) every S seconds; 0: never "
                        "(default 60)")
    r.add_argument("--log-level", default="INFO", help="DEBUG | INFO | WARNING | ERROR (default INFO)")
    return p


def _with_power_source(config: EdgeConfig, spec: str | None) -> EdgeConfig:
    if spec is None:
        return config
    return dataclasses.replace(config, power=parse_source(spec, config.power, "--power-source"))


def main(argv: Sequence[str]) -> int:
    args = _parser().parse_args(list(argv))
    setup_logging(args.log_level)
    flags = {
        "bundle": args.bundle, "cloud": args.cloud, "sinks": args.sinks,
        "source": args.source[0] if args.source and len(args.source) == 1 else None,
        "sources": tuple(SourceSpec(u) for u in args.source) if args.source and len(args.source) > 1 else None,
        "offload": args.offload, "deadline_ms": args.deadline_ms, "window": args.window,
        "realtime": args.realtime, "fps": args.fps, "status_interval_s": args.status_interval_s,
        "curve_secret": args.curve_secret, "curve_server_key": args.curve_server_key, "insecure": args.insecure,
    }
    budgets = {"latency_ms": args.latency_budget_ms, "max_offload_rate": args.max_offload_rate,
               "power_w": args.power_budget_w}
    config = _with_power_source(load_edge_config(args.config, os.environ, flags, budgets), args.power_source)
    monitor = {k: v for k, v in (("shadow_rate", args.shadow_rate), ("field_trace", args.field_trace),
                                 ("field_frames", args.field_frames)) if v is not None}
    if monitor:
        config = dataclasses.replace(config, monitor=dataclasses.replace(config.monitor, **monitor))
    if args.max_batch is not None or args.max_wait_ms is not None:
        mux = config.mux
        config = dataclasses.replace(config, mux=MuxConfig(
            mux.max_batch if args.max_batch is None else args.max_batch,
            mux.max_wait_ms if args.max_wait_ms is None else args.max_wait_ms))
    log = logging.getLogger("jetsplit.edge")
    log.info("config %s", json.dumps(config.describe(), default=str))
    agent = EdgeAgent(config)
    notifier = agent.notifier

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: finishing the frames in flight", signum)
        agent.stop()

    def on_reload(signum: int, frame: FrameType | None) -> None:
        try:
            new = load_edge_config(args.config, os.environ, flags, budgets).budgets
        except JetsplitError as exc:
            log.error("reload: %s (the budgets in force stay)", exc)
            return
        if agent.controller is None:
            log.warning("reload: no budget controller (nothing is offloaded): budgets not applied")
            return
        agent.controller.set_budgets(new)
        log.info("reload: budgets %s", json.dumps(new.__dict__))

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_reload)
    notifier.ready(f"bundle {agent.bundle.name}")
    try:
        agent.run()
    finally:
        notifier.stopping()
        agent.close()
    print(json.dumps({"summary": agent.summary()}), file=sys.stderr, flush=True)
    return 0
