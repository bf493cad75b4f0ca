"""Traces: per sample and stage, what the chain did on a labelled set.

A trace records every stage run on every sample (no early exit): the gate score,
the combined prediction and whether it was right, the stage's own prediction, the
time, and the bytes and energy the stage costs. Any set of thresholds can then be
evaluated from the trace without running a model again: a sample exits at the
first stage whose score reaches its threshold (the last stage always answers).
That is what makes threshold search fast and what ``jetsplit eval`` reports.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jetsplit.errors import DataError

__all__ = ["CascadeStats", "Trace", "collect_trace"]


@dataclass(frozen=True)
class CascadeStats:
    n: int
    accuracy: float
    mean_time_ms: float
    exit_fraction: tuple[float, ...]
    mean_flops: float | None
    mean_bytes: float
    mean_energy_mj: float
    exit_stage: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Trace:
    """Arrays are (N, S) unless noted; ``labels`` is (N,)."""

    stage_names: tuple[str, ...]
    labels: np.ndarray
    score: np.ndarray
    pred: np.ndarray
    own_pred: np.ndarray
    time_ms: np.ndarray
    bytes_up: np.ndarray
    energy_mj: np.ndarray
    flops: tuple[int | None, ...]
    thresholds: tuple[float | None, ...]
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(len(self.labels))

    @property
    def num_stages(self) -> int:
        return len(self.stage_names)

    @property
    def correct(self) -> np.ndarray:
        out: np.ndarray = self.pred == self.labels[:, None]
        return out

    @property
    def own_correct(self) -> np.ndarray:
        out: np.ndarray = self.own_pred == self.labels[:, None]
        return out

    def exit_stage(self, thresholds: Sequence[float | None] | None = None) -> np.ndarray:
        thr = self.thresholds if thresholds is None else tuple(thresholds)
        if len(thr) != self.num_stages:
            raise DataError(f"thresholds: expected {self.num_stages} values, got {len(thr)}")
        exit_at = np.full(self.n, self.num_stages - 1, np.int64)
        pending = np.ones(self.n, bool)
        for s in range(self.num_stages - 1):
            t = thr[s]
            if t is None:
                continue
            hit = pending & (self.score[:, s] >= t)
            exit_at[hit] = s
            pending &= ~hit
        return exit_at

    def cascade(self, thresholds: Sequence[float | None] | None = None) -> CascadeStats:
        exit_at = self.exit_stage(thresholds)
        rows = np.arange(self.n)
        ran = np.arange(self.num_stages)[None, :] <= exit_at[:, None]
        flops = None
        if all(f is not None for f in self.flops):
            per = np.asarray(self.flops, np.float64)
            flops = float((ran * per).sum(axis=1).mean()) if self.n else 0.0
        return CascadeStats(
            n=self.n,
            accuracy=float(self.correct[rows, exit_at].mean()) if self.n else 0.0,
            mean_time_ms=float((self.time_ms * ran).sum(axis=1).mean()) if self.n else 0.0,
            exit_fraction=tuple(float((exit_at == s).mean()) if self.n else 0.0 for s in range(self.num_stages)),
            mean_flops=flops,
            mean_bytes=float((self.bytes_up * ran).sum(axis=1).mean()) if self.n else 0.0,
            mean_energy_mj=float((self.energy_mj * ran).sum(axis=1).mean()) if self.n else 0.0,
            exit_stage=exit_at,
        )

    def full(self) -> CascadeStats:
        """Every sample through every stage."""
        return self.cascade([None] * self.num_stages)

    # -- files --------------------------------------------------------------------
    def save(self, path: Path) -> None:
        meta = {
            "stage_names": list(self.stage_names),
            "flops": list(self.flops),
            "thresholds": list(self.thresholds),
            "meta": self.meta,
        }
        with open(path, "wb") as fh:
            np.savez_compressed(
                fh,
                labels=self.labels,
                score=self.score,
                pred=self.pred,
                own_pred=self.own_pred,
                time_ms=self.time_ms,
                bytes_up=self.bytes_up,
                energy_mj=self.energy_mj,
                meta=np.frombuffer(json.dumps(meta).encode(), np.uint8),
            )

    @classmethod
    def load(cls, path: Path) -> Trace:
        try:
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise DataError(f"trace {str(path)!r}: cannot read: {exc}") from None
        try:
            meta = json.loads(arrays.pop("meta").tobytes().decode())
            return cls(
                stage_names=tuple(meta["stage_names"]),
                flops=tuple(meta["flops"]),
                thresholds=tuple(meta["thresholds"]),
                meta=dict(meta.get("meta", {})),
                **arrays,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"trace {str(path)!r}: not a jetsplit trace ({exc})") from None


def collect_trace(
    chain: object,
    frames: np.ndarray | Sequence[np.ndarray],
    labels: np.ndarray,
    batch_size: int = 1,
    progress: bool = False,
) -> Trace:
    """Run every stage of ``chain`` on every frame and record a trace.

    Times are engine times per sample: with ``batch_size`` 1 (the default) they are
    what one frame costs online; larger batches are faster to collect and report
    the batch time divided by its size.
    """
    from jetsplit.chain import Chain

    if not isinstance(chain, Chain):
        raise TypeError("collect_trace needs a jetsplit.chain.Chain")
    n = len(labels)
    s_count = len(chain)
    score = np.zeros((n, s_count), np.float32)
    pred = np.zeros((n, s_count), np.int64)
    own_pred = np.zeros((n, s_count), np.int64)
    time_ms = np.zeros((n, s_count), np.float64)
    iterator = range(0, n, batch_size)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, total=(n + batch_size - 1) // batch_size, desc="trace", unit="batch", leave=False)
    for lo in iterator:
        hi = min(lo + batch_size, n)
        x = chain.preprocess(frames[lo:hi])
        for s, so in enumerate(chain.run_all(x)):
            score[lo:hi, s] = so.score
            pred[lo:hi, s] = so.pred
            own_pred[lo:hi, s] = so.own_probs.argmax(axis=1)
            time_ms[lo:hi, s] = so.time_ms / (hi - lo)
    bundle = chain.bundle
    return Trace(
        stage_names=tuple(s.name for s in bundle.stages),
        labels=np.asarray(labels, np.int64),
        score=score,
        pred=pred,
        own_pred=own_pred,
        time_ms=time_ms,
        bytes_up=np.zeros((n, s_count)),
        energy_mj=np.zeros((n, s_count)),
        flops=tuple(s.flops for s in bundle.stages),
        thresholds=bundle.thresholds(),
        meta={"bundle": bundle.name, "fingerprint": bundle.fingerprint},
    )
