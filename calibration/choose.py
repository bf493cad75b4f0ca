"""Choosing what a bundle runs: the gate per bundle (``--gate auto``) and the
weight of a ``weighted`` combination (``--combine weighted``).

**Combination.** A stage with ``combine = "weighted"`` answers with the log-linear
pool ``(1 - w) log p_before + w log p_own`` (:mod:`jetsplit.combine`). ``w`` is
tuned on the calib split over a grid of 41 values in 0..1: the best calib
accuracy of the stage's combined answer, ties broken by the lower negative
log-likelihood (so among equally accurate weights the better calibrated wins),
stage by stage from the first cloud stage on. ``w = 1`` is ``replace``, so the
tuned pool is never worse than the stage alone *on calib*; the test split says
whether it holds.

**Gate.** ``--gate auto`` builds the chain once per candidate (``margin``,
``maxprob``, ``entropy``, ``support``, ``support+carry`` where a stage carries a
tensor, ``dgate``), collects its calib trace, and runs the same threshold search
the chosen objective runs; the candidate with the least cost (offload for a
two-stage chain) wins, ties going to the earlier, simpler one. Every candidate's
figures go into the summary and the bundle's ``[meta]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from jetsplit.bundle import Bundle, write_bundle
from jetsplit.combine import combine
from jetsplit.errors import ConfigError

from .builder import StageDraft, add_gates_to_graphs, fit_gates, run_stages, to_manifest

__all__ = ["AUTO_CANDIDATES", "Candidate", "Draft", "build_draft", "candidates_for", "tune_combination"]

AUTO_CANDIDATES = ("margin", "maxprob", "entropy", "support", "support+carry", "dgate")
_WEIGHTS = np.linspace(0.0, 1.0, 41)


@dataclass(frozen=True)
class Candidate:
    """One gate tried by ``--gate auto``, with its calib figures."""

    gate: str
    cost: float
    accuracy: float
    offload: float | None
    thresholds: tuple[float | None, ...]

    def as_dict(self) -> dict[str, object]:
        return {"gate": self.gate, "calib_cost": self.cost, "calib_accuracy": self.accuracy,
                "calib_offload": self.offload, "thresholds": list(self.thresholds)}


def candidates_for(stages: Sequence[StageDraft]) -> tuple[str, ...]:
    """The auto candidates that apply: ``support+carry`` only where an edge stage
    carries a tensor."""
    carries = any(st.carry for st in stages[:-1])
    return tuple(c for c in AUTO_CANDIDATES if c != "support+carry" or carries)


def _pool_quality(before: np.ndarray, own: np.ndarray, labels: np.ndarray, w: float) -> tuple[float, float]:
    probs, _ = combine("weighted", own, before, 1, float(w))
    accuracy = float((probs.argmax(axis=1) == labels).mean())
    nll = float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-30)).mean())
    return accuracy, nll


def tune_combination(stages: list[StageDraft], x: np.ndarray, labels: np.ndarray,
                     start: int) -> tuple[list[StageDraft], list[dict[str, object]]]:
    """Stages from ``start`` on set to ``combine = "weighted"`` with weights tuned
    on (``x``, ``labels``); and per tuned stage, its calib accuracy alone and
    combined."""
    if not 0 < start < len(stages):
        raise ConfigError(f"--combine weighted: needs a stage after the first to combine (stage {start} of {len(stages)})")
    out = list(stages)
    report: list[dict[str, object]] = []
    for i in range(start, len(out)):
        out[i] = replace(out[i], combine="weighted", combine_weight=1.0)
        runs = run_stages(out[: i + 1], x)
        before, own = runs[i - 1]["probs"], runs[i]["own_probs"]
        scored = [(*_pool_quality(before, own, labels, w), float(w)) for w in _WEIGHTS]
        acc, nll, w = max(scored, key=lambda r: (r[0], -r[1], r[2]))
        out[i] = replace(out[i], combine_weight=w)
        report.append({"stage": out[i].name, "weight": w, "calib_accuracy_alone": float((own.argmax(1) == labels).mean()),
                       "calib_accuracy_combined": acc, "calib_nll_combined": nll})
    return out, report


@dataclass(frozen=True)
class Draft:
    """A chain built with one gate choice: its stages, manifest and draft bundle."""

    gate: str
    stages: list[StageDraft]
    manifest: dict[str, Any]
    sources: dict[str, Path]
    bundle: Bundle


def build_draft(stages: list[StageDraft], gate: str, train_out: list[dict[str, np.ndarray]], labels: np.ndarray,
                num_classes: int, work: Path, manifest: dict[str, Any], support_hidden: int = 0) -> Draft:
    """Gates of ``gate`` fitted (learned ones on ``train_out``), written into the
    graphs where they can be, and the bundle written under ``work / gate``;
    ``manifest`` gives every top-level table but ``stage``."""
    gwork = work / gate
    gwork.mkdir(parents=True, exist_ok=True)
    gated = fit_gates(stages, gate, train_out, labels, num_classes, gwork, support_hidden)
    gated = add_gates_to_graphs(gated, num_classes, gwork)
    tables, sources = to_manifest(gated, [None] * len(gated))
    full = {**manifest, "stage": tables}
    return Draft(gate, gated, full, sources, write_bundle(gwork / "draft", full, sources))
