"""Cloud worker configuration: ``cloud.toml``, then ``JETSPLIT_CLOUD_*`` environment
variables, then command-line flags, each overriding the one before.

    bind = ["tcp://0.0.0.0:5555"]
    bundles = ["/var/lib/jetsplit/bundles/little-big"]
    max_batch = 16          # requests per engine batch
    max_wait_ms = 2.0       # longest a request waits for its batch to fill
    threads = 2             # engine threads; 0: the socket thread runs batches itself
    intra_op_threads = 1    # ONNX Runtime threads per engine call
    engine_cpus = "1-3"     # CPUs for the engine threads and their ONNX Runtime pools ("": any)
    io_cpus = "0"           # CPUs for the socket thread and libzmq's I/O thread ("": any)
    backend = "onnxruntime"
    metrics_port = 9100     # 0: no metrics endpoint
    metrics_addr = "127.0.0.1"
    drain_timeout_s = 30.0  # SIGTERM: longest wait for accepted work
    insecure = false        # true: serve a non-loopback address without CURVE (a warning)
    queue_requests = 4096   # per (bundle, stage); past it requests are refused OVERLOADED
    queue_mib = 64          # bytes the requests of one queue may hold (default: 1/16 of memory over the queues)
    rcvhwm = 8              # requests ZeroMQ may buffer per connected edge before the worker reads them

    [curve]
    secret = "/etc/jetsplit/keys/worker.key_secret"
    allow = "/etc/jetsplit/keys/clients"
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from jetsplit.cloud.placement import check_cpus, parse_cpus
from jetsplit.config import EnvTable, layered, parse_flag, relative_to_file, split_list
from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader, read_toml
from jetsplit.protocol.exposure import check_server

__all__ = ["CloudConfig", "load_cloud_config"]


@dataclass(frozen=True)
class CloudConfig:
    bind: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    bundles: tuple[str, ...] = ()
    max_batch: int = 16
    max_wait_ms: float = 2.0
    threads: int = 1
    intra_op_threads: int = 1
    backend: str = "onnxruntime"
    metrics_port: int = 0
    # Loopback by default: metrics say what a worker serves. In a cluster set
    # 0.0.0.0 so Prometheus can scrape the pod.
    metrics_addr: str = "127.0.0.1"
    drain_timeout_s: float = 30.0
    curve_secret: str | None = None
    curve_allow: str | None = None
    engine_cpus: tuple[int, ...] = ()
    io_cpus: tuple[int, ...] = ()
    insecure: bool = False
    # Admission control (cloud/admission.py): None sizes the queue from the machine.
    queue_requests: int | None = None
    queue_mib: float | None = None
    # Per connected edge: small, since the socket thread reads ahead into the
    # bounded queue; ZeroMQ's default (1000) would let every edge park ~1000
    # requests in the worker's memory, unbounded by configuration.
    rcvhwm: int = 8

    def __post_init__(self) -> None:
        if not self.bundles:
            raise ConfigError("bundles: expected at least one bundle (--bundle DIR), got none")
        if not self.bind:
            raise ConfigError("bind: expected at least one endpoint (--bind tcp://HOST:PORT), got none")
        for ep in self.bind:
            if "://" not in ep:
                raise ConfigError(f"bind: expected an endpoint such as tcp://0.0.0.0:5555, got {ep!r}")
        if self.max_batch < 1:
            raise ConfigError(f"max_batch: expected an integer >= 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms: expected a number >= 0, got {self.max_wait_ms}")
        if self.threads < 0:
            raise ConfigError(f"threads: expected an integer >= 0, got {self.threads}")
        if not 0 <= self.metrics_port < 65536:
            raise ConfigError(f"metrics_port: expected 0..65535, got {self.metrics_port}")
        if (self.curve_secret is None) != (self.curve_allow is None):
            raise ConfigError("curve: expected both the secret key file and the allowed-clients directory, got one")
        if self.queue_requests is not None and self.queue_requests < 1:
            raise ConfigError(f"queue_requests: expected an integer >= 1, got {self.queue_requests}")
        if self.queue_mib is not None and not 0 < self.queue_mib < float("inf"):
            raise ConfigError(f"queue_mib: expected a size in MiB > 0, got {self.queue_mib}")
        if self.rcvhwm < 1:
            raise ConfigError(f"rcvhwm: expected an integer >= 1, got {self.rcvhwm}")
        check_cpus(self.engine_cpus, "engine_cpus")
        check_cpus(self.io_cpus, "io_cpus")

    def check_exposure(self) -> None:
        """Refuse plaintext on a non-loopback address unless ``insecure`` (then warn):
        called by the worker before it binds (protocol/exposure.py)."""
        check_server(self.bind, self.curve_secret is not None, self.insecure)

    def describe(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _from_file(path: Path) -> dict[str, Any]:
    raw = read_toml(path, ConfigError)
    r = TableReader(raw, str(path), ConfigError)
    out: dict[str, Any] = {}
    for key in ("bind", "bundles"):
        value = r.texts(key, None)
        if value is not None:
            out[key] = value
    for key in ("max_batch", "threads", "intra_op_threads", "metrics_port", "queue_requests", "rcvhwm"):
        value = r.integer(key, None)
        if value is not None:
            out[key] = value
    for key in ("max_wait_ms", "drain_timeout_s", "queue_mib"):
        value = r.number(key, None)
        if value is not None:
            out[key] = value
    insecure = r.custom("insecure", lambda v: v, None)
    if insecure is not None:
        if not isinstance(insecure, bool):
            raise r.fail("insecure", "true or false", insecure)
        out["insecure"] = insecure
    metrics_addr = r.text("metrics_addr", None)
    if metrics_addr is not None:
        out["metrics_addr"] = metrics_addr
    backend = r.text("backend", None)
    if backend is not None:
        out["backend"] = backend
    for key in ("engine_cpus", "io_cpus"):
        cpus = r.text(key, None)
        if cpus is not None:
            out[key] = parse_cpus(cpus, f"{path}: {key}")
    curve = r.table("curve", None)
    if curve is not None:
        c = TableReader(curve, f"{path} [curve]", ConfigError)
        out["curve_secret"] = c.text("secret")
        out["curve_allow"] = c.text("allow")
        c.done()
    r.done()
    # Relative bundle paths in a file are relative to the file.
    if "bundles" in out:
        out["bundles"] = tuple(relative_to_file(b, path) for b in out["bundles"])
    return out


_ENV: EnvTable = {
    "JETSPLIT_CLOUD_BIND": ("bind", split_list),
    "JETSPLIT_CLOUD_BUNDLES": ("bundles", split_list),
    "JETSPLIT_CLOUD_MAX_BATCH": ("max_batch", int),
    "JETSPLIT_CLOUD_MAX_WAIT_MS": ("max_wait_ms", float),
    "JETSPLIT_CLOUD_THREADS": ("threads", int),
    "JETSPLIT_CLOUD_METRICS_PORT": ("metrics_port", int),
    "JETSPLIT_CLOUD_METRICS_ADDR": ("metrics_addr", str),
    "JETSPLIT_CLOUD_ENGINE_CPUS": ("engine_cpus", lambda text: parse_cpus(text, "JETSPLIT_CLOUD_ENGINE_CPUS")),
    "JETSPLIT_CLOUD_IO_CPUS": ("io_cpus", lambda text: parse_cpus(text, "JETSPLIT_CLOUD_IO_CPUS")),
    "JETSPLIT_CLOUD_INSECURE": ("insecure", parse_flag),
    "JETSPLIT_CLOUD_QUEUE_REQUESTS": ("queue_requests", int),
    "JETSPLIT_CLOUD_QUEUE_MIB": ("queue_mib", float),
    "JETSPLIT_CLOUD_RCVHWM": ("rcvhwm", int),
}


def load_cloud_config(path: Path | None, environ: Mapping[str, str], flags: Mapping[str, Any]) -> CloudConfig:
    file_values = _from_file(path) if path is not None else {}
    return CloudConfig(**layered(file_values, environ, _ENV, flags, ("bind", "bundles")))
