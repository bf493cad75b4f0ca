"""Gates: pure, vectorised functions of a batch that say how sure an answer is.

``score(probs, features) -> (B,)``, higher is surer; a sample is accepted iff
``score >= threshold``. The fixed gates read only the (combined) class
probabilities:

- ``margin``: top-1 minus top-2 probability, in [0, 1] (Tann et al.; Park et al.)
- ``maxprob``: top-1 probability (Yin-Yang's confidence probe)
- ``entropy``: 1 - H(p) / log(C) (BranchyNet), in [0, 1]

The learned gates evaluate parameters stored in the bundle (training them is the
calibration package's job):

- ``dgate``: a linear head on pooled intermediate features, trained with a hinge
  loss (Shafiee et al.); the score is the largest signed distance to a class
  hyperplane, ``max_c (w_c . f + b_c) / |w_c|``, and the class is its argmax, so a
  d-gate also *predicts*.
- ``support``: a logistic regression (or a small MLP) that predicts P(this exit is
  right) from the exit's top-k probabilities, their log ratios, margin and entropy,
  optionally with the exit's pooled features and the carried activation's
  statistics (DL-gleaning's support network; :func:`support_inputs`).

Parameter files are ``.npz`` archives (numpy, no pickle).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jetsplit.errors import BundleError

__all__ = [
    "class_scores",
    "DGate",
    "FixedGate",
    "Gate",
    "SUPPORT_TOP_K",
    "SupportGate",
    "activation_stats",
    "entropy_score",
    "load_gate",
    "margin_score",
    "maxprob_score",
    "pool_features",
    "softmax",
    "support_inputs",
]


def class_scores(scores: np.ndarray) -> np.ndarray:
    """``(B, C)`` class scores from a model output shaped ``(B, C)`` or ``(B, C, 1, ..., 1)``
    (classifiers that end in a 1x1 convolution and global pooling, as SqueezeNet and
    DenseNet do); any other shape is returned as it is, for the caller to reject."""
    if scores.ndim > 2 and all(d == 1 for d in scores.shape[2:]):
        return scores.reshape(scores.shape[:2])
    return scores
SUPPORT_TOP_K = 4
_LOG_FLOOR = 1e-30


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float32, copy=False)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=-1, keepdims=True)
    return out


def margin_score(probs: np.ndarray) -> np.ndarray:
    if probs.shape[-1] < 2:
        return np.ones(probs.shape[:-1], np.float32)
    top2 = np.partition(probs, -2, axis=-1)[..., -2:]
    out: np.ndarray = (top2[..., 1] - top2[..., 0]).astype(np.float32)
    return out


def maxprob_score(probs: np.ndarray) -> np.ndarray:
    out: np.ndarray = probs.max(axis=-1).astype(np.float32)
    return out


def entropy_score(probs: np.ndarray) -> np.ndarray:
    p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
    h = -(p * np.log(p)).sum(axis=-1)
    out: np.ndarray = (1.0 - h / np.log(probs.shape[-1])).astype(np.float32)
    return out


def pool_features(features: np.ndarray) -> np.ndarray:
    """(B, C, H, W) or (B, ..., C) -> (B, D): global average over spatial axes."""
    f = features.astype(np.float32, copy=False)
    if f.ndim > 2:
        f = f.reshape(f.shape[0], f.shape[1], -1).mean(axis=2)
    return f


def activation_stats(carry: np.ndarray) -> np.ndarray:
    """(B, ...) carried activation -> (B, 4): mean, standard deviation, maximum and
    the fraction of values <= 0 (how much of a ReLU map is silent)."""
    a = carry.reshape(carry.shape[0], -1).astype(np.float32)
    return np.stack([a.mean(axis=1), a.std(axis=1), a.max(axis=1), (a <= 0).mean(axis=1)], axis=1).astype(np.float32)


def support_inputs(probs: np.ndarray, features: np.ndarray | None = None, carry: np.ndarray | None = None,
                   layout: int = 2) -> np.ndarray:
    """The support network's input.

    Layout 2: the top-k sorted probabilities (k = min(C, 4)), the log ratios
    ``log(p_k / p_1)`` for k = 2..K (the logit gaps, which keep telling samples
    apart where a float32 top-1 probability has saturated at 1), margin, entropy
    score, then pooled ``features`` and :func:`activation_stats` of ``carry`` if
    given. Layout 1 (bundles written before): every sorted probability, margin,
    entropy score, pooled features.
    """
    sorted_p = -np.sort(-probs.astype(np.float32), axis=-1)
    if layout == 1:
        cols = [sorted_p]
    else:
        top = sorted_p[:, :SUPPORT_TOP_K]
        logs = np.log(np.maximum(top.astype(np.float64), _LOG_FLOOR))
        cols = [top, (logs[:, 1:] - logs[:, :1]).astype(np.float32)]
    cols += [margin_score(probs)[:, None], entropy_score(probs)[:, None]]
    if features is not None:
        cols.append(pool_features(features))
    if carry is not None and layout != 1:
        cols.append(activation_stats(carry))
    return np.concatenate(cols, axis=1).astype(np.float32)


class Gate:
    """Base: ``score`` is required; ``predict`` returns a class only for gates that
    classify (the d-gate), else None and the stage's own argmax stands."""

    kind = "abstract"
    needs_features = False
    needs_carry = False

    def score(self, probs: np.ndarray, features: np.ndarray | None = None,
              carry: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError

    def predict(self, probs: np.ndarray, features: np.ndarray | None = None) -> np.ndarray | None:
        return None


@dataclass(frozen=True)
class FixedGate(Gate):
    kind: str  # type: ignore[misc]

    def score(self, probs: np.ndarray, features: np.ndarray | None = None,
              carry: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "margin":
            return margin_score(probs)
        if self.kind == "maxprob":
            return maxprob_score(probs)
        return entropy_score(probs)


class DGate(Gate):
    kind = "dgate"
    needs_features = True

    def __init__(self, weight: np.ndarray, bias: np.ndarray, mean: np.ndarray | None = None,
                 scale: np.ndarray | None = None) -> None:
        if weight.ndim != 2 or bias.shape != (weight.shape[0],):
            raise BundleError(
                f"dgate parameters: expected weight (C, D) and bias (C,), got {weight.shape} and {bias.shape}"
            )
        self.weight = weight.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.norms = np.linalg.norm(self.weight, axis=1).clip(1e-12)
        self.mean = None if mean is None else mean.astype(np.float32)
        self.scale = None if scale is None else scale.astype(np.float32)

    def _distances(self, features: np.ndarray | None) -> np.ndarray:
        if features is None:
            raise BundleError("dgate: the stage produced no features tensor")
        f = pool_features(features)
        if f.shape[1] != self.weight.shape[1]:
            raise BundleError(f"dgate: features have {f.shape[1]} values, parameters expect {self.weight.shape[1]}")
        if self.mean is not None and self.scale is not None:
            f = (f - self.mean) / self.scale
        out: np.ndarray = (f @ self.weight.T + self.bias) / self.norms
        return out

    def score(self, probs: np.ndarray, features: np.ndarray | None = None,
              carry: np.ndarray | None = None) -> np.ndarray:
        out: np.ndarray = self._distances(features).max(axis=1).astype(np.float32)
        return out

    def predict(self, probs: np.ndarray, features: np.ndarray | None = None) -> np.ndarray | None:
        out: np.ndarray = self._distances(features).argmax(axis=1)
        return out


class SupportGate(Gate):
    kind = "support"

    def __init__(self, layers: list[tuple[np.ndarray, np.ndarray]], use_features: bool,
                 mean: np.ndarray | None = None, scale: np.ndarray | None = None,
                 use_carry: bool = False, layout: int = 1) -> None:
        if not layers or layers[-1][0].shape[1] != 1:
            raise BundleError("support parameters: expected layers ending in one output")
        if layout not in (1, 2):
            raise BundleError(f"support parameters: layout expected 1 or 2, got {layout}")
        self.layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in layers]
        self.use_features = use_features
        self.needs_features = use_features
        self.use_carry = self.needs_carry = use_carry
        self.layout = layout
        self.mean = None if mean is None else mean.astype(np.float32)
        self.scale = None if scale is None else scale.astype(np.float32)

    def score(self, probs: np.ndarray, features: np.ndarray | None = None,
              carry: np.ndarray | None = None) -> np.ndarray:
        if self.use_features and features is None:
            raise BundleError("support gate: reads the stage's features, but the stage produced none")
        if self.use_carry and carry is None:
            raise BundleError("support gate: reads the carried activation, but the stage carries none")
        x = support_inputs(probs, features if self.use_features else None,
                           carry if self.use_carry else None, self.layout)
        if x.shape[1] != self.layers[0][0].shape[0]:
            raise BundleError(f"support gate: inputs have {x.shape[1]} values, parameters expect {self.layers[0][0].shape[0]}")
        if self.mean is not None and self.scale is not None:
            x = (x - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            x = x @ w + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        out: np.ndarray = (1.0 / (1.0 + np.exp(-x[:, 0]))).astype(np.float32)
        return out


def load_gate(kind: str, params: Path | None) -> Gate:
    """Build a gate from its kind and (for learned gates) its ``.npz`` parameters.

    dgate npz: ``weight`` (C, D), ``bias`` (C,), optional ``mean``/``scale`` (D,).
    support npz: ``w0, b0, w1, b1, ...`` (w_i: in x out), ``use_features`` (0/1),
    optional ``use_carry`` (0/1), ``layout`` (1 when absent; see
    :func:`support_inputs`), ``mean``/``scale``.
    """
    if kind in ("margin", "maxprob", "entropy"):
        return FixedGate(kind)
    if params is None:
        raise BundleError(f"{kind} gate: needs a parameter file")
    try:
        with np.load(params, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise BundleError(f"{kind} gate: cannot read parameters {params.name!r}: {exc}") from None
    mean, scale = arrays.get("mean"), arrays.get("scale")
    try:
        if kind == "dgate":
            return DGate(arrays["weight"], arrays["bias"], mean, scale)
        if kind == "support":
            layers = []
            i = 0
            while f"w{i}" in arrays:
                layers.append((arrays[f"w{i}"], arrays[f"b{i}"]))
                i += 1
            flag = {k: bool(arrays.get(k, np.array(0)).item()) for k in ("use_features", "use_carry")}
            return SupportGate(layers, flag["use_features"], mean, scale, flag["use_carry"],
                               int(arrays.get("layout", np.array(1)).item()))
    except KeyError as exc:
        raise BundleError(f"{kind} gate: parameters {params.name!r} lack array {exc.args[0]!r}") from None
    raise BundleError(f"gate kind {kind!r}: unknown")
