"""A tuned ``weighted`` combination runs on the worker as it runs offline."""

from __future__ import annotations

from typing import Any

import numpy as np

from jetsplit.chain import Chain
from jetsplit.protocol import Client


def _weighted(manifest: dict[str, Any]) -> None:
    manifest["stage"][1].update(combine="weighted", combine_weight=0.3)


def test_weighted_combination_on_the_worker_equals_the_offline_chain(make_bundle, worker_thread, offloads) -> None:
    bundle = make_bundle("little-big", _weighted)
    endpoint = worker_thread(bundle).endpoints[0]
    stage, reqs, frames = offloads(bundle, 16)
    assert set(reqs[0]) == {"frame", "probs", "count"}  # the edge's scores travel with the frame
    with Chain.open(bundle) as full:
        offline = full.run_all(full.preprocess(frames))
    pooled = offline[1].probs
    # Not the big model alone: the little one's scores moved the answer.
    assert np.abs(pooled - offline[1].own_probs).max() > 0.05
    logp = 0.7 * np.log(offline[0].probs.astype(np.float64)) + 0.3 * np.log(offline[1].own_probs.astype(np.float64))
    expect = np.exp(logp - logp.max(axis=1, keepdims=True))
    np.testing.assert_allclose(pooled, expect / expect.sum(axis=1, keepdims=True), atol=1e-5)
    with Client(endpoint, bundle.fingerprint, timeout_ms=5000) as client:
        for i, req in enumerate(reqs):
            rep = client.infer(stage, req, deadline_ms=5000)
            assert rep.ok, rep.message
            np.testing.assert_allclose(rep.scores, pooled[i], atol=1e-5)
