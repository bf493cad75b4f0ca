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
    probs = softmax(np.array([[5.0, 0, 0], [0.1, 0, 0]], np.float32))
    x = support_inputs(probs)
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
