"""Assembling a bundle's stage models from a user's ONNX files.

The three shapes ``jetsplit calibrate`` builds:

- little/big (Yin-Yang): the little model on the edge, the big one on the cloud,
  both on the frame;
- ensemble (Tann et al.): members averaged, the first ``edge`` on the edge;
- cuts (DL-gleaning, d-gates): one model cut at one or more tensors; every
  segment but the last gets an exit head (:mod:`.exits`) and runs on the edge,
  carrying the cut activation; the last segment is the cloud's tail.

Then the learned gates are fitted on the train split (:mod:`.gates_train`), the
models converted to the chosen precision (:mod:`.quantize`) and the learned gates
written into the graphs as a ``gate_score`` output.

Names are whatever the user's models use: the scores output is the model's only
output, or the one the user names; a model whose scores come out of a Softmax is
marked ``scores_kind = "probs"``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from jetsplit.combine import combine
from jetsplit.errors import ConfigError, EngineError
from jetsplit.gates import class_scores, softmax

from .exits import build_exit, run_batched
from .gates_train import add_gate_output, save_params, train_dgate, train_support
from .graph import CutPoint, ModelGraph, TensorInfo, check_cut, load_graph
from .modelfile import save_model
from .packing import PACKED, pack_head, unpack_tail
from .quantize import PrecisionShift, compare_precision, convert
from .split import extract, real_inputs, split_model, verify_split

__all__ = [
    "StageDraft",
    "check_cuts",
    "input_defaults",
    "add_gates_to_graphs",
    "apply_precision",
    "fit_gates",
    "gate_kind",
    "run_stages",
    "scores_output",
    "stages_cuts",
    "stages_ensemble",
    "stages_little_big",
    "to_manifest",
]


@dataclass(frozen=True)
class StageDraft:
    """One stage before it is written: its model file and how the chain reads it."""

    name: str
    path: Path
    where: str
    input: str
    scores: str
    scores_kind: str = "logits"
    carry: str | None = None
    features: str | None = None
    combine: str = "replace"
    combine_weight: float = 1.0
    gate: str | None = None
    gate_params: Path | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def model_file(self) -> str:
        return f"{self.name}.onnx"


def _outputs(path: Path) -> list[str]:
    return [o.name for o in onnx.load(str(path), load_external_data=False).graph.output]


def scores_output(path: Path, wanted: str | None = None) -> tuple[str, str]:
    """(name, 'logits' | 'probs') of the class-scores output of ``path``."""
    model = onnx.load(str(path), load_external_data=False)
    names = [o.name for o in model.graph.output]
    if wanted is not None and wanted not in names and len(names) > 1:
        # With one output there is nothing to choose (--scores may name another
        # model's output, as in a little/big pair); with several, a typo must not pass.
        raise ConfigError(f"{path.name}: --scores {wanted!r}: no such output (outputs: {', '.join(names)})")
    if wanted is not None and wanted in names:
        name = wanted
    elif len(names) == 1:
        name = names[0]
    else:
        raise ConfigError(
            f"{path.name}: which output holds the class scores? It has {names}; name one with --scores"
        )
    return name, "probs" if _softmaxed(model, name) else "logits"


# Nodes that move values without changing them: a Softmax before them still means
# the output is probabilities (version converters wrap an old Softmax in Flatten
# and Reshape; SqueezeNet's output is a Softmax shaped (N, C, 1, 1)).
_SHAPE_ONLY = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")


def _softmaxed(model: onnx.ModelProto, name: str) -> bool:
    """Whether output ``name`` comes out of a Softmax, through shape-only nodes."""
    producers = {o: n for n in model.graph.node for o in n.output}
    node = producers.get(name)
    while node is not None and node.op_type in _SHAPE_ONLY:
        node = producers.get(node.input[0])
    return node is not None and node.op_type == "Softmax"


def input_defaults(path: Path) -> dict[str, Any]:
    """[input] defaults read from the model's first input: size, layout, colour, dtype."""
    model = onnx.load(str(path), load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in inits)
    tt = inp.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).name
    out: dict[str, Any] = {"dtype": dtype if dtype in ("float32", "float16", "uint8") else "float32"}
    if len(dims) == 4:
        if dims[1] in (1, 3):
            out.update(layout="nchw", channels=dims[1], height=dims[2], width=dims[3])
        elif dims[3] in (1, 3):
            out.update(layout="nhwc", channels=dims[3], height=dims[1], width=dims[2])
    if "channels" in out:
        out["colour"] = "gray" if out.pop("channels") == 1 else "rgb"
    return out


def stages_little_big(little: Path, big: Path, scores: str | None) -> list[StageDraft]:
    s_little, k_little = scores_output(little, scores)
    s_big, k_big = scores_output(big, scores)
    return [StageDraft("little", little, "edge", "frame", s_little, k_little),
            StageDraft("big", big, "cloud", "frame", s_big, k_big)]


def stages_ensemble(models: Sequence[Path], scores: str | None, edge: int) -> list[StageDraft]:
    if len(models) < 2:
        raise ConfigError(f"--ensemble: expected at least 2 models, got {len(models)}")
    if not 0 <= edge <= len(models):
        raise ConfigError(f"--edge-stages: expected 0..{len(models)}, got {edge}")
    out = []
    for i, m in enumerate(models):
        s, k = scores_output(m, scores)
        out.append(StageDraft(f"m{i}", m, "edge" if i < edge else "cloud", "frame", s, k, combine="average"))
    return out


def stages_cuts(model: Path, cuts: Sequence[str], scores: str | None, train_x: np.ndarray,
                train_y: np.ndarray, num_classes: int, work: Path, data: str | None = None) -> list[StageDraft]:
    """Cut ``model`` at ``cuts`` (any order), exits on every segment but the last.

    A cut is one tensor or several joined by commas (``"T1,T2"``): several travel
    packed into one carried tensor (:mod:`.packing`), their bytes summed.
    """
    graph = load_graph(model)
    points = check_cuts(graph, cuts)
    s_tail, k_tail = scores_output(model, scores)
    external = bool(graph.external)
    if len(points) == 1:
        # One cut: the split module's own cut, verified head->tail == full model.
        res = split_model(model, points[0].tensors, work / "split")
        verify_split(model, res, real_inputs(graph, data))
        segments = [res.head_path, res.tail_path]
    else:
        bounds = [list(graph.inputs), *[list(p.tensors) for p in points], list(graph.outputs)]
        segments = []
        for i in range(len(bounds) - 1):
            path = work / f"segment{i}.onnx"
            save_model(extract(graph, bounds[i], bounds[i + 1]), path, external=external)
            segments.append(path)
    carries = [p.tensors[0] if len(p.tensors) == 1 else f"{PACKED}{i}" for i, p in enumerate(points)]
    for i, point in enumerate(points):
        if len(point.tensors) > 1:
            _pack_segments(segments, i, point.infos, carries[i], external)
    drafts: list[StageDraft] = []
    x = train_x
    for i, (seg, point, carry) in enumerate(zip(segments[:-1], points, carries)):
        cut = point.tensors[0]
        exit_ = build_exit(seg, cut, x, train_y, num_classes, work / f"exit{i}.onnx", prefix=f"exit{i}",
                           carry=carry, external=external)
        drafts.append(StageDraft(f"exit{i}", exit_.path, "edge", "frame" if i == 0 else "carry", exit_.scores,
                                 carry=carry, features=exit_.features,
                                 info={"cut": ",".join(point.tensors), "exit_train_accuracy": exit_.train_accuracy}))
        x = np.concatenate([o[carry] for o in run_batched(exit_.path, x, [carry])])
    drafts.append(StageDraft("tail", segments[-1], "cloud", "carry", s_tail, k_tail))
    return drafts


def check_cuts(graph: ModelGraph, cuts: Sequence[str]) -> list[CutPoint]:
    """Each ``--cut`` spec (one tensor, or several joined by commas) checked against
    ``graph`` and described, in graph order; ``ConfigError`` naming a bad one."""
    specs = dict.fromkeys(tuple(n.strip() for n in c.split(",") if n.strip()) for c in cuts)
    return sorted((check_cut(graph, list(names)) for names in specs), key=lambda p: p.position)


def _pack_segments(segments: list[Path], i: int, infos: Sequence[TensorInfo], packed: str, external: bool) -> None:
    """Segment ``i`` packs cut ``i`` into ``packed`` (keeping its first tensor for the
    exit to pool); segment ``i + 1`` unpacks it. Both rewritten in place."""
    head = pack_head(onnx.load(str(segments[i])), infos, keep=[infos[0].name], packed=packed)
    save_model(head, segments[i], external=external)
    tail = unpack_tail(onnx.load(str(segments[i + 1])), infos, packed=packed)
    save_model(tail, segments[i + 1], external=external)


def run_stages(stages: Sequence[StageDraft], x: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Every stage's scores, combined probabilities, features and carry on ``x``."""
    outs: list[dict[str, np.ndarray]] = []
    carry: np.ndarray | None = None
    probs: np.ndarray | None = None
    count = 0
    for i, st in enumerate(stages):
        inp = x if st.input == "frame" else carry
        if inp is None:
            raise EngineError(f"stage {st.name!r} takes a carry, but stage {i - 1} gives none")
        want = [n for n in dict.fromkeys([st.scores, st.features, st.carry]) if n]
        parts = list(run_batched(st.path, inp, want))
        got = {k: np.concatenate([p[k] for p in parts]) for k in want}
        got[st.scores] = class_scores(got[st.scores])
        own = softmax(got[st.scores]) if st.scores_kind == "logits" else got[st.scores].astype(np.float32)
        probs, count = combine(st.combine, own, probs, count, st.combine_weight)
        got["own_probs"], got["probs"] = own, probs
        outs.append(got)
        carry = got.get(st.carry) if st.carry else None
    return outs


def gate_kind(choice: str) -> str:
    """The bundle's gate kind of a calibration choice (``support+carry`` is a
    ``support`` gate that also reads the carried activation's statistics)."""
    return choice.split("+", 1)[0]


def fit_gates(stages: list[StageDraft], kind: str, train_out: list[dict[str, np.ndarray]],
              labels: np.ndarray, num_classes: int, work: Path, support_hidden: int = 0) -> list[StageDraft]:
    """Gates after every stage but the last; learned ones fitted on the train split.

    ``kind`` is a gate kind, or ``support+carry`` (a support gate that also reads
    the statistics of the tensor the stage carries, where it carries one)."""
    base = gate_kind(kind)
    out = []
    for i, st in enumerate(stages):
        if i == len(stages) - 1:
            out.append(st)
            continue
        params_path = None
        info = dict(st.info)
        features = st.features
        if base in ("dgate", "support"):
            o = train_out[i]
            # Without an intermediate tensor, a d-gate reads the stage's own scores.
            feats = o[features] if features else None
            if base == "dgate":
                if feats is None:
                    features, feats = st.scores, o[st.scores]
                params = train_dgate(feats, labels, num_classes)
            else:
                correct = o["probs"].argmax(axis=1) == labels
                carry = o.get(st.carry) if kind.endswith("+carry") and st.carry else None
                params = train_support(o["probs"], correct, feats, hidden=support_hidden, carry=carry)
                info["support_train_right"] = float(correct.mean())
            params_path = save_params(params, work / f"{st.name}.{base}.npz")
        out.append(replace(st, gate=base, gate_params=params_path, features=features, info=info))
    return out


def apply_precision(stages: list[StageDraft], precision: str, calib_x: np.ndarray, labels: np.ndarray,
                    work: Path) -> tuple[list[StageDraft], list[PrecisionShift]]:
    """Stages converted to ``precision``, and what each stage's scores lost."""
    if precision == "fp32":
        return stages, []
    fp32 = run_stages(stages, calib_x)
    out, shifts = [], []
    for i, st in enumerate(stages):
        inp = calib_x if st.input == "frame" else fp32[i - 1][stages[i - 1].carry or ""]
        path = convert(precision, st.path, work / f"{st.name}.{precision}.onnx", inp)
        converted = replace(st, path=path)
        prec_scores = class_scores(np.concatenate([o[st.scores] for o in run_batched(path, inp, [st.scores])]))
        shifts.append(compare_precision(st.name, precision, fp32[i][st.scores], prec_scores, labels, st.scores_kind))
        out.append(converted)
    return out, shifts


def add_gates_to_graphs(stages: list[StageDraft], num_classes: int, work: Path) -> list[StageDraft]:
    """Learned gates also as a ``gate_score`` graph output where the gate reads this
    stage alone (not after averaging with earlier stages)."""
    out = []
    for i, st in enumerate(stages):
        own = i == 0 or st.combine == "replace"
        if st.gate in ("dgate", "support") and st.gate_params is not None and own:
            with np.load(st.gate_params) as z:
                params = {k: z[k] for k in z.files}
            if int(params.get("use_carry", np.array(0)).item()):
                out.append(st)  # activation statistics: the numpy gate only
                continue
            model = add_gate_output(onnx.load(str(st.path)), st.gate, params, st.scores, st.scores_kind,
                                    st.features, num_classes)
            path = work / f"{st.name}.gated.onnx"
            onnx.save(model, str(path))
            st = replace(st, path=path, info={**st.info, "gate_in_graph": True})
        out.append(st)
    return out


def to_manifest(stages: Sequence[StageDraft], thresholds: Sequence[float | None]) -> tuple[list[dict[str, Any]], dict[str, Path]]:
    """[[stage]] tables and the files to copy into the bundle."""
    tables: list[dict[str, Any]] = []
    sources: dict[str, Path] = {}
    for st, thr in zip(stages, thresholds):
        t: dict[str, Any] = {"name": st.name, "model": st.model_file, "where": st.where, "input": st.input,
                             "scores": st.scores, "scores_kind": st.scores_kind}
        for key in ("carry", "features"):
            if getattr(st, key):
                t[key] = getattr(st, key)
        if st.combine != "replace":
            t["combine"] = st.combine
        if st.combine == "weighted":
            t["combine_weight"] = float(st.combine_weight)
        sources[st.model_file] = st.path
        if st.gate is not None:
            gate: dict[str, Any] = {"kind": st.gate, "threshold": float(thr if thr is not None else 0.5)}
            if st.gate_params is not None:
                gate["params"] = f"{st.name}.{st.gate}.npz"
                sources[gate["params"]] = st.gate_params
            t["gate"] = gate
        tables.append(t)
    return tables, sources
