"""The zoo's gate checks (tools/zoo/checks.py) choose what they say they choose.

They run on the runtime's own trace and threshold search; these tests check the
result against a brute-force walk over thresholds on synthetic logits (torch is
not needed: the checks only read logits).
"""

from __future__ import annotations

import numpy as np

from jetsplit.gates import margin_score, softmax
from jetsplit.tools.zoo.checks import cascade_check, ensemble_check


def _logits(rng: np.random.Generator, y: np.ndarray, skill: float) -> np.ndarray:
    """Noisy logits whose argmax is right more often the larger ``skill`` is."""
    out = rng.normal(size=(len(y), 10))
    out[np.arange(len(y)), y] += skill
    return out


def _splits(rng: np.random.Generator, skill: float, y: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {s: _logits(rng, y[s], skill) for s in ("calib", "test")}


def test_cascade_check_sends_the_fewest_to_big_that_keep_its_accuracy() -> None:
    rng = np.random.default_rng(0)
    y = {s: rng.integers(0, 10, 2000) for s in ("calib", "test")}
    little, big = _splits(rng, 2.0, y), _splits(rng, 4.0, y)
    out = cascade_check(little, big, y)

    m = margin_score(softmax(little["calib"]))
    target = float((big["calib"].argmax(1) == y["calib"]).mean()) - 0.002
    best_fraction = 1.0
    for t in np.unique(m):
        pred = np.where(m >= t, little["calib"].argmax(1), big["calib"].argmax(1))
        if (pred == y["calib"]).mean() >= target:
            best_fraction = min(best_fraction, float((m < t).mean()))
    assert out["calib_accuracy"] >= target
    assert out["calib_fraction_to_big"] == best_fraction
    assert 0.0 < out["test_fraction_to_big"] < 1.0


def test_ensemble_check_meets_the_full_ensemble_accuracy_for_less_compute() -> None:
    rng = np.random.default_rng(1)
    y = {s: rng.integers(0, 10, 2000) for s in ("calib", "test")}
    members = [_splits(rng, skill, y) for skill in (2.5, 3.0, 3.5)]
    out = ensemble_check(members, [1, 2, 4], y)
    assert len(out["thresholds"]) == 2  # type: ignore[arg-type]
    assert out["calib_accuracy"] >= out["calib_full_accuracy"] - 0.001  # type: ignore[operator]
    assert out["calib_flops_fraction"] < 1.0  # type: ignore[operator]
