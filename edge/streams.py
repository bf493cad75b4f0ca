"""What the agent reads: its sources (``--source``, repeatable, or ``[[sources]]``)
and how the muxer batches them (``[mux]``).

    [[sources]]
    uri = "csi://0"
    name = "gate"              # source_id in results (default: the URI as given)

    [[sources]]
    uri = "/data/replay/"
    realtime = true            # play at fps like a camera (default: [edge] realtime)
    fps = 15.0

    [mux]
    max_batch = 8              # frames per batch through the edge stages, at most
    max_wait_ms = 10.0         # how long a batch waits to fill (DeepStream's
                               # batched-push-timeout); 0 runs what is ready
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jetsplit.errors import ConfigError
from jetsplit.manifest import TableReader

__all__ = ["MuxConfig", "SourceSpec", "parse_sources"]


@dataclass(frozen=True)
class SourceSpec:
    """One source: its URI, the name results carry, and how a file plays
    (``None``: the agent's ``fps``/``realtime``)."""

    uri: str
    name: str | None = None
    fps: float | None = None
    realtime: bool | None = None

    def __post_init__(self) -> None:
        if not self.uri:
            raise ConfigError("sources: expected a source URI, got an empty string")
        if self.fps is not None and not self.fps > 0:
            raise ConfigError(f"sources: {self.uri}: fps: expected a number > 0, got {self.fps}")

    @property
    def source_id(self) -> str:
        return self.name or self.uri

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str) -> SourceSpec:
        r = TableReader(table, where, ConfigError)
        realtime = r.custom("realtime", lambda v: v, None)
        if realtime is not None and not isinstance(realtime, bool):
            raise r.fail("realtime", "true or false", realtime)
        spec = cls(uri=r.text("uri"), name=r.text("name", None), fps=r.number("fps", None), realtime=realtime)
        r.done()
        return spec


def parse_sources(tables: Iterable[Mapping[str, Any]], where: str) -> tuple[SourceSpec, ...]:
    """``[[sources]]`` tables; names must be unique (results are told apart by them)."""
    specs = tuple(SourceSpec.from_table(t, f"{where} [[sources]] #{i + 1}") for i, t in enumerate(tables))
    check_unique(specs)
    return specs


def check_unique(specs: Iterable[SourceSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.source_id in seen:
            raise ConfigError(f"sources: {spec.source_id!r} appears twice (give each source its own name)")
        seen.add(spec.source_id)


@dataclass(frozen=True)
class MuxConfig:
    """How frames of several sources are batched through the edge stages."""

    max_batch: int = 8
    max_wait_ms: float = 10.0

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"[mux].max_batch: expected an integer >= 1, got {self.max_batch}")
        if not self.max_wait_ms >= 0:
            raise ConfigError(f"[mux].max_wait_ms: expected a number >= 0, got {self.max_wait_ms}")

    @classmethod
    def from_table(cls, table: Mapping[str, Any], where: str = "[mux]") -> MuxConfig:
        r = TableReader(table, where, ConfigError)
        cfg = cls(max_batch=r.integer("max_batch", 8), max_wait_ms=r.number("max_wait_ms", 10.0))
        r.done()
        return cfg
