"""The chain of stages: every mode (split, little/big, ensemble, multi-exit) is one.

Stage *i* runs one engine on the preprocessed frame or on the tensor carried from
stage *i-1*, turns its output into class probabilities, combines them with the
previous stages' (``replace``, ``average`` for ensembles, or a tuned ``weighted``
log-linear pool: :mod:`jetsplit.combine`), and its gate decides:
accept (final answer) or continue. The same objects run a labelled dataset offline
(:meth:`Chain.run_all`, for calibration and ``jetsplit eval``) and one frame or a
batch online (:meth:`Chain.run_from`, for the edge agent and the cloud worker), so
what was tuned is what runs.

    >>> from jetsplit.bundle import load_bundle
    >>> with Chain.open(load_bundle("demo:little-big")) as chain:     # doctest: +SKIP
    ...     res = chain.run_from(0, chain.preprocess([frame]), stop_at=chain.first_cloud)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import numpy as np

from jetsplit.bundle import Bundle, StageSpec
from jetsplit.combine import combine
from jetsplit.engines import Engine, open_engine
from jetsplit.errors import BundleError, DataError
from jetsplit.gates import Gate, class_scores, load_gate, softmax

__all__ = ["Chain", "ChainResult", "ChainState", "Stage", "StageOutput"]


@dataclass(frozen=True)
class ChainState:
    """What a stage needs of the stages before it: the combined probabilities so
    far and how many stage outputs they average (for ``average`` combine)."""

    probs: np.ndarray  # (B, C) float32
    count: int

    def take(self, index: np.ndarray) -> ChainState:
        return ChainState(self.probs[index], self.count)


@dataclass(frozen=True)
class StageOutput:
    """One stage over a batch."""

    own_probs: np.ndarray  # (B, C) this stage alone
    probs: np.ndarray  # (B, C) combined with earlier stages
    pred: np.ndarray  # (B,) combined prediction (the gate's, if the gate classifies)
    score: np.ndarray  # (B,) gate score; +inf where there is no gate (last stage)
    accept: np.ndarray  # (B,) bool
    carry: np.ndarray | None
    state: ChainState
    time_ms: float  # engine time for the whole batch


@dataclass(frozen=True)
class ChainResult:
    """A batch run through a stretch of the chain.

    Per sample: ``stage`` is the stage that gave the answer (the last stage run);
    ``accepted`` says whether a gate accepted it (or the chain's last stage ran).
    Samples not accepted stopped before ``next_stage``; ``carry`` and ``state`` are
    what a later stage (on the cloud) needs to resume them, row-aligned with the
    batch.
    """

    stage: np.ndarray  # (B,) int
    accepted: np.ndarray  # (B,) bool
    probs: np.ndarray  # (B, C)
    pred: np.ndarray  # (B,)
    score: np.ndarray  # (B,)
    next_stage: int | None
    carry: np.ndarray | None
    state: ChainState | None
    stage_time_ms: tuple[float, ...]  # engine time per stage index (0 where not run)


class Stage:
    """A stage spec bound to an open engine and its gate."""

    def __init__(self, index: int, spec: StageSpec, engine: Engine, gate: Gate | None, num_classes: int) -> None:
        self.index = index
        self.spec = spec
        self.engine = engine
        self.gate = gate
        self.num_classes = num_classes
        self.threshold = spec.gate.threshold if spec.gate else None
        self.input_name = spec.input_tensor or engine.inputs[0].name
        self._outputs = [spec.scores] + [t for t in (spec.carry, spec.features) if t]

    @property
    def name(self) -> str:
        return self.spec.name

    def run(self, x: np.ndarray, state: ChainState | None, threshold: float | None = None) -> StageOutput:
        out = self.engine.infer({self.input_name: x})
        scores = class_scores(out[self.spec.scores])
        if scores.ndim != 2 or scores.shape[1] != self.num_classes:
            raise BundleError(
                f"stage {self.name!r}: output {self.spec.scores!r} expected shape (B, {self.num_classes}), got {scores.shape}"
            )
        own = softmax(scores) if self.spec.scores_kind == "logits" else scores.astype(np.float32)
        probs, count = combine(self.spec.combine, own, None if state is None else state.probs,
                               0 if state is None else state.count, self.spec.combine_weight)
        features = out.get(self.spec.features) if self.spec.features else None
        thr = self.threshold if threshold is None else threshold
        if self.gate is None or thr is None:
            score = np.full(len(x), np.inf, np.float32)
            gate_pred = None
        else:
            carried = out.get(self.spec.carry) if self.gate.needs_carry and self.spec.carry else None
            score = self.gate.score(probs, features, carried)
            gate_pred = self.gate.predict(probs, features)
        pred = gate_pred if gate_pred is not None else probs.argmax(axis=1)
        accept = score >= (thr if thr is not None else -np.inf)
        carry = out.get(self.spec.carry) if self.spec.carry else None
        return StageOutput(own, probs, pred, score, accept, carry, ChainState(probs, count), self.engine.last_time_ms)


class Chain:
    """A bundle's stages, opened on one backend."""

    def __init__(self, bundle: Bundle, stages: Sequence[Stage | None]) -> None:
        self.bundle = bundle
        self.stages = list(stages)
        self.first_cloud = bundle.first_cloud_stage()

    @classmethod
    def open(
        cls,
        bundle: Bundle,
        backend: str = "onnxruntime",
        where: str | None = None,
        **engine_options: Any,
    ) -> Chain:
        """Open the engines of the stages at ``where`` ('edge', 'cloud', or None for
        all) and check every model against the manifest."""
        stages: list[Stage | None] = []
        try:
            for i, spec in enumerate(bundle.stages):
                if where is not None and spec.where != where:
                    stages.append(None)
                    continue
                engine = open_engine(bundle.path(spec.model), backend=backend, **engine_options)
                gate = None
                if spec.gate is not None:
                    params = bundle.path(spec.gate.params) if spec.gate.params else None
                    gate = load_gate(spec.gate.kind, params)
                stages.append(Stage(i, spec, engine, gate, bundle.num_classes))
            chain = cls(bundle, stages)
            chain._check_shapes()
        except BaseException:
            for st in stages:
                if st is not None:
                    st.engine.close()
            raise
        return chain

    def close(self) -> None:
        for st in self.stages:
            if st is not None:
                st.engine.close()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.stages)

    def stage(self, index: int) -> Stage:
        st = self.stages[index]
        if st is None:
            raise BundleError(f"stage {index} ({self.bundle.stages[index].name!r}) is not opened on this side")
        return st

    # -- checks -----------------------------------------------------------------
    def _check_shapes(self) -> None:
        pre = self.bundle.preprocess
        for st in self.stages:
            if st is None:
                continue
            spec, eng = st.spec, st.engine
            where = f"[[stage]] {spec.name!r} model {spec.model}"
            names = [s.name for s in eng.inputs]
            if spec.input_tensor is None and len(names) != 1:
                raise BundleError(f"{where}: input_tensor: expected one of {names} (the model has {len(names)} inputs), got none")
            inp = eng.input_spec(st.input_name)
            for out_name in st._outputs:
                eng.output_spec(out_name)  # raises naming the outputs it has
            scores = eng.output_spec(spec.scores)
            classes = scores.shape[1] if len(scores.shape) > 1 else None
            if classes not in (None, self.bundle.num_classes) or any(d not in (None, 1) for d in scores.shape[2:]):
                raise BundleError(f"{where}: output {spec.scores!r}: expected {self.bundle.num_classes} classes ([labels]), got shape {scores.describe_shape()}")
            if spec.input == "frame":
                want = (None, *pre.sample_shape)
                if not _shape_fits(inp.shape, want) or inp.dtype != np.dtype(pre.dtype):
                    raise BundleError(
                        f"{where}: input {inp.name!r}: expected {_fmt(want)} {pre.dtype} from [input], got {inp.describe_shape()} {inp.dtype}"
                    )
            else:
                prev = self.stages[st.index - 1]
                if prev is not None and prev.spec.carry is not None:
                    carried = prev.engine.output_spec(prev.spec.carry)
                    if not _shape_fits(inp.shape, carried.shape) or inp.dtype != carried.dtype:
                        raise BundleError(
                            f"{where}: input {inp.name!r}: expected {carried.describe_shape()} {carried.dtype} "
                            f"(carry {prev.spec.carry!r} of {prev.name!r}), got {inp.describe_shape()} {inp.dtype}"
                        )

    # -- running ------------------------------------------------------------------
    def preprocess(self, frames: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
        return self.bundle.preprocess.batch(frames)

    def run_from(
        self,
        start: int,
        x: np.ndarray,
        carry: np.ndarray | None = None,
        state: ChainState | None = None,
        stop_at: int | None = None,
        thresholds: Sequence[float | None] | None = None,
    ) -> ChainResult:
        """Run a batch from stage ``start`` until each sample is accepted, or until
        ``stop_at`` (exclusive; e.g. the first cloud stage on the edge).

        ``x`` is the preprocessed frame batch (needed by any stage whose input is
        ``frame``; may be empty-shaped when every stage run takes the carry);
        ``carry`` and ``state`` resume a chain that an earlier side started.
        ``thresholds`` override the bundle's (the edge's budget controller).
        """
        n = len(x) if x is not None and len(x) else (len(carry) if carry is not None else 0)
        end = len(self.stages) if stop_at is None else min(stop_at, len(self.stages))
        if not 0 <= start < len(self.stages):
            raise BundleError(f"stage index {start}: expected 0..{len(self.stages) - 1}")
        num_c = self.bundle.num_classes
        stage_of = np.full(n, start, np.int64)
        accepted = np.zeros(n, bool)
        probs = np.zeros((n, num_c), np.float32) if state is None else state.probs.astype(np.float32, copy=True)
        pred = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
        score = np.zeros(n, np.float32)
        times = [0.0] * len(self.stages)
        active = np.arange(n)
        cur_carry, cur_state = carry, state
        out_carry: np.ndarray | None = None
        next_stage: int | None = None
        for i in range(start, end):
            st = self.stage(i)
            if st.spec.input == "frame":
                inp = x[active] if len(active) != n else x
            else:
                if cur_carry is None:
                    raise DataError(f"stage {st.name!r} resumes from a carried tensor, but none was given")
                inp = cur_carry
            thr = None if thresholds is None else thresholds[i]
            last = i == len(self.stages) - 1
            so = st.run(inp, cur_state, threshold=thr)
            times[i] = so.time_ms
            acc = np.ones(len(active), bool) if last else so.accept
            stage_of[active] = i
            probs[active] = so.probs
            pred[active] = so.pred
            score[active] = so.score
            accepted[active[acc]] = True
            keep = ~acc
            if not keep.any():
                active = active[keep]
                break
            active = active[keep]
            cur_carry = so.carry[keep] if so.carry is not None else None
            cur_state = so.state.take(keep)
            next_stage = i + 1 if i + 1 < len(self.stages) else None
        if len(active):
            # Rows of samples still pending; resumption data aligned to the batch.
            if cur_carry is not None:
                out_carry = np.zeros((n, *cur_carry.shape[1:]), cur_carry.dtype)
                out_carry[active] = cur_carry
            full_state = ChainState(probs.copy(), cur_state.count if cur_state else 0)
        else:
            next_stage = None
            full_state = None
        return ChainResult(stage_of, accepted, probs, pred, score, next_stage, out_carry, full_state, tuple(times))

    def run_all(self, x: np.ndarray) -> list[StageOutput]:
        """Every stage on every sample, no early exit (offline evaluation)."""
        outputs: list[StageOutput] = []
        state: ChainState | None = None
        carry: np.ndarray | None = None
        for i in range(len(self.stages)):
            st = self.stage(i)
            so = st.run(x if st.spec.input == "frame" else _need(carry, st.name), state)
            outputs.append(so)
            state, carry = so.state, so.carry
        return outputs


def _need(carry: np.ndarray | None, stage: str) -> np.ndarray:
    if carry is None:
        raise DataError(f"stage {stage!r} needs a carried tensor, but the previous stage produced none")
    return carry


def _shape_fits(have: tuple[int | None, ...], want: tuple[int | None, ...]) -> bool:
    if len(have) != len(want):
        return False
    return all(a is None or b is None or a == b for a, b in zip(have, want))


def _fmt(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"
