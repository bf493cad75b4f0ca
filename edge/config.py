"""Edge agent configuration: ``edge.toml``, then ``JETSPLIT_EDGE_*`` environment
variables, then command-line flags, each overriding the one before.

    [edge]
    bundle = "/var/lib/jetsplit/bundles/split"
    cloud = ["tcp://cloud-a:5555", "tcp://cloud-b:5555"]
    source = "csi://0"
    sinks = ["jsonl:/var/log/jetsplit/results.jsonl", "zmq-pub:ipc:///run/jetsplit/results"]
    offload = "auto"            # auto | activations | frames | none: what may leave the board
                                # (auto: frames if the bundle's cloud stage needs them, else activations)
    deadline_ms = 150.0         # capture to result, for frames sent to the cloud
    window = 8                  # requests in flight at most
    backend = "onnxruntime"
    intra_op_threads = 1
    engine_threads = 1          # batches the edge model runs at once (several streams: the cores)
    status_interval_s = 60.0    # a status line (fps, offload rate, fallbacks) this often; 0: none

    [budget]                    # see jetsplit.edge.controller.Budgets
    latency_ms = 120.0
    max_offload_rate = 0.2

    [[sources]]                 # several sources (instead of source): see
    uri = "csi://0"             # jetsplit.edge.streams; --source is repeatable
    name = "gate"
    [mux]                       # see jetsplit.edge.streams.MuxConfig
    max_batch = 8
    max_wait_ms = 10.0

    [breaker]                   # see jetsplit.edge.breaker.BreakerConfig
    [controller]                # see jetsplit.edge.controller.ControllerConfig
    [power]                     # see jetsplit.edge.power.PowerConfig
    [pool]                      # see jetsplit.edge.pool.PoolConfig (several workers)
    [monitor]                   # drift, shadow audit, field trace: jetsplit.edge.monitor

    [curve]
    secret = "/etc/jetsplit/keys/edge.key_secret"
    server_key = "/etc/jetsplit/keys/worker.key"

Without ``[curve]``, offloading to a worker that is not on loopback is refused
unless ``insecure = true`` in ``[edge]`` (or ``--insecure``): SPEC.md section 8.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from jetsplit.config import EnvTable, layered, parse_flag, relative_to_file, split_list
from jetsplit.edge.breaker import BreakerConfig
from jetsplit.edge.controller import Budgets, ControllerConfig
from jetsplit.edge.monitor import MonitorConfig
from jetsplit.edge.pool import PoolConfig
from jetsplit.edge.power import PowerConfig
from jetsplit.edge.streams import MuxConfig, SourceSpec, check_unique, parse_sources
from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader, read_toml
from jetsplit.protocol.exposure import check_client

__all__ = ["OFFLOAD_MODES", "EdgeConfig", "load_edge_config"]

OFFLOAD_MODES = ("auto", "activations", "frames", "none")


@dataclass(frozen=True)
class EdgeConfig:
    bundle: str = ""
    source: str = ""
    cloud: tuple[str, ...] = ()
    sinks: tuple[str, ...] = ("stdout",)
    offload: str = "auto"
    deadline_ms: float = 150.0
    window: int = 8
    backend: str = "onnxruntime"
    intra_op_threads: int = 1
    engine_threads: int = 1
    realtime: bool = False
    fps: float | None = None
    status_interval_s: float = 60.0
    curve_secret: str | None = None
    curve_server_key: str | None = None
    insecure: bool = False
    budgets: Budgets = field(default_factory=Budgets)
    # Probing a dead cloud costs one frame's deadline a second at most, while a long
    # back-off delays recovery: cap it at 1 s on the edge.
    breaker: BreakerConfig = field(default_factory=lambda: BreakerConfig(max_backoff_s=1.0))
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    pool: PoolConfig = field(default_factory=PoolConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    sources: tuple[SourceSpec, ...] = ()  # several sources; when set, ``source`` is ignored
    mux: MuxConfig = field(default_factory=MuxConfig)

    def __post_init__(self) -> None:
        if not self.bundle:
            raise ConfigError("bundle: expected a bundle directory or demo:NAME (--bundle), got none")
        if not self.source and not self.sources:
            raise ConfigError("source: expected a source URI (--source, or [[sources]] in edge.toml), got none")
        check_unique(self.sources)
        if self.offload not in OFFLOAD_MODES:
            raise ConfigError(f"offload: expected one of {', '.join(OFFLOAD_MODES)}, got {self.offload!r}")
        if not self.deadline_ms > 0:
            raise ConfigError(f"deadline_ms: expected a number > 0, got {self.deadline_ms}")
        if self.window < 1:
            raise ConfigError(f"window: expected an integer >= 1, got {self.window}")
        if self.engine_threads < 1:
            raise ConfigError(f"engine_threads: expected an integer >= 1, got {self.engine_threads}")
        if self.engine_threads > 1 and self.backend != "onnxruntime":
            # A TensorRT execution context runs one batch at a time.
            raise ConfigError(f"engine_threads: {self.backend} runs one batch at a time, "
                              f"expected 1 with backend {self.backend!r}, got {self.engine_threads}")
        if not 0 <= self.status_interval_s < float("inf"):
            raise ConfigError(f"status_interval_s: expected a number of seconds >= 0 (0: no status line), "
                              f"got {self.status_interval_s}")
        for ep in self.cloud:
            if "://" not in ep:
                raise ConfigError(f"cloud: expected endpoints such as tcp://host:5555, got {ep!r}")
        if (self.curve_secret is None) != (self.curve_server_key is None):
            raise ConfigError("curve: expected both the edge's secret key and the worker's public key, got one")

    def check_exposure(self, mode: str | None = None) -> None:
        """Refuse to offload in plaintext beyond loopback unless ``insecure`` (then
        warn): called by the agent before it connects (protocol/exposure.py).
        ``mode``: what the agent resolved ``offload`` to (``auto`` takes the
        bundle's), so the message names what would cross."""
        what = mode or self.offload
        if what != "none":
            check_client(self.cloud, self.curve_secret is not None, self.insecure, what)

    def source_specs(self) -> tuple[SourceSpec, ...]:
        """The sources to read, each with its own ``fps``/``realtime`` or the agent's."""
        specs = self.sources or (SourceSpec(self.source),)
        return tuple(SourceSpec(s.uri, s.name, s.fps if s.fps is not None else self.fps,
                                self.realtime if s.realtime is None else s.realtime) for s in specs)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.__dict__ if hasattr(value, "__dataclass_fields__") else value
        out["sources"] = [s.__dict__ for s in self.sources]
        return out


def _from_file(path: Path) -> dict[str, Any]:
    raw = read_toml(path, ConfigError)
    top = TableReader(raw, str(path), ConfigError)
    out: dict[str, Any] = {}
    edge = top.table("edge", {})
    r = TableReader(edge, f"{path} [edge]", ConfigError)
    for key in ("bundle", "source", "offload", "backend"):
        if (v := r.text(key, None)) is not None:
            out[key] = v
    if "sources" in raw:
        out["sources"] = parse_sources(top.tables("sources"), str(path))
    for key in ("cloud", "sinks"):
        if (v := r.texts(key, None)) is not None:
            out[key] = v
    for key in ("deadline_ms", "fps", "status_interval_s"):
        if (v := r.number(key, None)) is not None:
            out[key] = v
    for key in ("window", "intra_op_threads", "engine_threads"):
        if (v := r.integer(key, None)) is not None:
            out[key] = v
    for key in ("realtime", "insecure"):
        flag = r.custom(key, lambda v: v, None)
        if flag is not None:
            if not isinstance(flag, bool):
                raise r.fail(key, "true or false", flag)
            out[key] = flag
    r.done()
    sections: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
        "budget": Budgets.from_table, "breaker": BreakerConfig.from_table,
        "controller": ControllerConfig.from_table, "power": PowerConfig.from_table,
        "pool": PoolConfig.from_table, "mux": MuxConfig.from_table, "monitor": MonitorConfig.from_table,
    }
    for name, parse in sections.items():
        table = top.table(name, None)
        if table is not None:
            out["budgets" if name == "budget" else name] = parse(table, f"{path} [{name}]")
    curve = top.table("curve", None)
    if curve is not None:
        c = TableReader(curve, f"{path} [curve]", ConfigError)
        out["curve_secret"] = c.text("secret")
        out["curve_server_key"] = c.text("server_key")
        c.done()
    top.done()
    if out.get("bundle"):
        out["bundle"] = relative_to_file(out["bundle"], path)
    return out


_ENV: EnvTable = {
    "JETSPLIT_EDGE_BUNDLE": ("bundle", str),
    "JETSPLIT_EDGE_SOURCE": ("source", str),
    "JETSPLIT_EDGE_CLOUD": ("cloud", split_list),
    "JETSPLIT_EDGE_OFFLOAD": ("offload", str),
    "JETSPLIT_EDGE_DEADLINE_MS": ("deadline_ms", float),
    "JETSPLIT_EDGE_STATUS_INTERVAL_S": ("status_interval_s", float),
    "JETSPLIT_EDGE_INSECURE": ("insecure", parse_flag),
}


def load_edge_config(path: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any],
                     budget_flags: Mapping[str, Any] | None = None) -> EdgeConfig:
    file_values = _from_file(path) if path is not None else {}
    if "JETSPLIT_EDGE_SOURCE" in environ or flags.get("source") or flags.get("sources"):
        # Sources named on a later layer replace the file's, in either form.
        file_values = {k: v for k, v in file_values.items() if k not in ("source", "sources")}
    values = layered(file_values, environ, _ENV, flags, ("cloud", "sinks", "sources"))
    set_budgets = {k: v for k, v in (budget_flags or {}).items() if v is not None}
    if set_budgets:
        base = values.get("budgets", Budgets())
        values["budgets"] = Budgets(**{**base.__dict__, **set_budgets})
    return EdgeConfig(**values)
