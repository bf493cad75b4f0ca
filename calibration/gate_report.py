"""How close a gate comes to the oracle, tuned on one split and reported on another.

The question of issue 17 and DESIGN §6: to answer as accurately as the final
(cloud) model alone, what fraction of samples must a gate send on, against the
oracle, which sends exactly the samples the edge gets wrong and the final stage
gets right? :func:`gate_figures` answers it honestly:

1. on the calib trace, the least offload whose cascade accuracy reaches the final
   model's *own* calib accuracy (``slack_pt`` below it, if asked);
2. those thresholds on the test trace: offload, accuracy, and the final model's
   own test accuracy; ``reaches`` says whether the cascade landed within
   ``tolerance_pt`` of it;
3. the oracle's test offload and the ratio; and the hindsight figure (the least
   test offload at the final model's test accuracy, thresholds chosen on test),
   which bounds what any threshold on this gate could do.

With ``combine = "weighted"`` the final stage answers with the pooled scores, so
the cascade may exceed the final model alone: the target stays the model alone
(``own_correct``), and the oracle is the replace chain's (edge wrong, final model
right), so figures with and without a combination compare.
"""

from __future__ import annotations

from typing import Any

from jetsplit.errors import ConfigError
from jetsplit.trace import Trace

from .search import evaluate_grid, search_thresholds

__all__ = ["gate_figures", "hindsight_offload"]


def hindsight_offload(trace: Trace, target: float, first_cloud: int = 1) -> float | None:
    """The least offload on ``trace`` whose cascade accuracy reaches ``target``."""
    g = evaluate_grid(trace, ("offload",), first_cloud)
    ok = g.accuracy >= target - 1e-12
    return float(g.costs["offload"][ok].min()) if ok.any() else None


def gate_figures(calib: Trace, test: Trace, first_cloud: int = 1, slack_pt: float = 0.0,
                 tolerance_pt: float = 0.2) -> dict[str, Any]:
    """Tuned on ``calib``, reported on ``test`` (see the module docstring)."""
    big_calib = float(calib.own_correct[:, -1].mean())
    big_test = float(test.own_correct[:, -1].mean())
    try:
        res = search_thresholds(calib, cost="offload", objective="min_cost", first_cloud=first_cloud,
                                min_accuracy=big_calib - slack_pt / 100.0)
    except ConfigError:
        return {"tuned": False, "big_test_accuracy": big_test}
    st = test.cascade(res.chosen.thresholds)
    edge_right = test.correct[:, :first_cloud].any(axis=1)
    oracle = float((~edge_right & test.own_correct[:, -1]).mean())
    offload = float((st.exit_stage >= first_cloud).mean())
    hind = hindsight_offload(test, big_test, first_cloud)

    def ratio(v: float | None) -> float | None:
        if v is None:
            return None
        return v / oracle if oracle > 0 else (0.0 if v == 0 else float("inf"))

    return {
        "tuned": True,
        "thresholds": [None if t is None else float(t) for t in res.chosen.thresholds],
        "calib_offload": float(res.chosen.cost),
        "test_offload": offload,
        "test_accuracy": st.accuracy,
        "big_test_accuracy": big_test,
        "edge_test_accuracy": float(test.correct[:, 0].mean()),
        "chain_full_test_accuracy": test.full().accuracy,
        "accuracy_vs_big_pt": 100.0 * (st.accuracy - big_test),
        "reaches": bool(st.accuracy >= big_test - tolerance_pt / 100.0 - 1e-12),
        "oracle_offload": oracle,
        "offload_over_oracle": ratio(offload),
        "hindsight_offload": hind,
        "hindsight_over_oracle": ratio(hind),
        "oracle_accuracy": float((edge_right | test.own_correct[:, -1]).mean()),
    }
