from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from jetsplit.errors import BundleError
from jetsplit.gates import (
    DGate,
    entropy_score,
    load_gate,
    margin_score,
    maxprob_score,
    softmax,
    support_inputs,
)


def test_fixed_gates_on_known_vectors() -> None:
    p = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]], np.float32)
    np.testing.assert_allclose(margin_score(p), [0.5, 0.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(maxprob_score(p), [0.7, 1 / 3, 1.0], atol=1e-6)
    ent = entropy_score(p)
    assert ent[1] == pytest.approx(0.0, abs=1e-6) and ent[2] == pytest.approx(1.0, abs=1e-6)
    assert 0 < ent[0] < 1


@given(arrays(np.float32, (7, 5), elements=st.floats(-30, 30, width=32)))
def test_scores_bounded_and_ordered(logits: np.ndarray) -> None:
    p = softmax(logits)
    m, top, ent = margin_score(p), maxprob_score(p), entropy_score(p)
    assert ((m >= -1e-6) & (m <= 1 + 1e-6)).all()
    assert ((top >= 0.2 - 1e-6) & (top <= 1 + 1e-6)).all()
    assert ((ent >= -1e-5) & (ent <= 1 + 1e-5)).all()
    assert (m <= top + 1e-6).all()


def test_dgate_distance_and_class(tmp_path: Path) -> None:
    w = np.array([[1.0, 0.0], [0.0, 2.0]], np.float32)
    b = np.array([0.0, -2.0], np.float32)
    path = tmp_path / "g.npz"
    np.savez(path, weight=w, bias=b)
    gate = load_gate("dgate", path)
    feats = np.array([[3.0, 0.0], [0.0, 3.0]], np.float32)[:, :, None, None]  # pooled from (B, C, 1, 1)
    score = gate.score(np.zeros((2, 2)), feats)
    np.testing.assert_allclose(score, [3.0, 2.0])  # (0*2... (2*3-2)/2 = 2)
    assert gate.predict(np.zeros((2, 2)), feats).tolist() == [0, 1]


def test_support_gate_logistic(tmp_path: Path) -> None:
    # Parameters without a ``layout`` (bundles written before layout 2) keep reading
    # layout 1: every sorted probability, margin, entropy.
    probs = softmax(np.array([[5.0, 0, 0], [0.1, 0, 0]], np.float32))
    x = support_inputs(probs, layout=1)
    w = np.zeros((x.shape[1], 1), np.float32)
    w[3, 0] = 10.0  # weight on the margin column
    path = tmp_path / "s.npz"
    np.savez(path, w0=w, b0=np.array([-2.0], np.float32), use_features=np.array(0))
    gate = load_gate("support", path)
    s = gate.score(probs)
    assert s[0] > 0.9 and s[1] < 0.2


def test_bad_gate_params(tmp_path: Path) -> None:
    path = tmp_path / "g.npz"
    np.savez(path, weight=np.zeros((3, 4)))
    with pytest.raises(BundleError, match="lack array 'bias'"):
        load_gate("dgate", path)
    with pytest.raises(BundleError, match="expected weight"):
        DGate(np.zeros(3), np.zeros(3))


def test_support_layout2_logit_gaps_and_activation_stats(tmp_path: Path) -> None:
    # Two answers whose float32 top-1 probability has saturated at 1.0 still differ
    # in their logit gap, which layout 2 reads.
    probs = softmax(np.array([[40.0, 0, 0, 0, 0], [20.0, 0, 0, 0, 0]], np.float32))
    assert probs[0, 0] == probs[1, 0] == 1.0
    x = support_inputs(probs)
    assert x.shape == (2, 4 + 3 + 2)
    np.testing.assert_allclose(x[:, 4], [-40.0, -20.0], rtol=1e-4)
    act = np.stack([np.zeros((2, 3, 3)), np.full((2, 3, 3), 2.0)]).astype(np.float32)
    xc = support_inputs(probs, carry=act)
    np.testing.assert_allclose(xc[:, -4:], [[0, 0, 0, 1], [2, 0, 2, 0]])
    w = np.zeros((xc.shape[1], 1), np.float32)
    w[4, 0] = 1.0
    path = tmp_path / "s.npz"
    np.savez(path, w0=w, b0=np.array([30.0], np.float32), use_features=np.array(0), use_carry=np.array(1),
             layout=np.array(2))
    gate = load_gate("support", path)
    assert gate.needs_carry
    s = gate.score(probs, carry=act)
    assert s[1] > 0.99 and s[0] < 0.01
    with pytest.raises(BundleError, match="reads the carried activation, but the stage carries none"):
        gate.score(probs)
