"""An ONNX model as a dataflow graph: topological order, shapes, and cut points.

A *cut* is a set of tensors that every path from the graph inputs to the graph
outputs passes through: the edge computes the cut tensors (the head), sends them,
and the cloud computes the outputs from them alone (the tail). Single-tensor cuts
are the articulation points of the dataflow between inputs and outputs: the output
of a residual block's final Add/Relu is one, a tensor inside the residual branch is
not (the skip connection goes around it).

    >>> from jetsplit.calibration.graph import load_graph, candidate_cuts
    >>> graph = load_graph("big.onnx")                         # doctest: +SKIP
    >>> [c.tensor for c in candidate_cuts(graph)][:2]          # doctest: +SKIP
    ['/stem/conv/Conv_output_0', '/stem/relu/Relu_output_0']

Shapes come from ``onnx.shape_inference`` with the batch dimension of every graph
input set to 1, so element counts are per sample.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx
from onnx import ModelProto, NodeProto

from jetsplit.errors import ConfigError, EngineError

from .batchaxis import batch_dynamic, infer_skeleton
from .modelfile import load_model

__all__ = [
    "CutPoint",
    "ModelGraph",
    "TensorInfo",
    "WIRE_BYTES",
    "candidate_cuts",
    "check_cut",
    "load_graph",
    "with_batch",
]

# Bytes per element for the activation encodings an operator can put on the wire.
WIRE_BYTES: dict[str, int] = {"fp32": 4, "f16": 2, "i8": 1}
# Candidates named in an unknown-tensor error: enough to spot a typo, one readable line.
_LISTED = 40


@dataclass(frozen=True)
class TensorInfo:
    """Element type and per-sample shape of one tensor; ``None`` is an unknown dim."""

    name: str
    elem_type: int
    shape: tuple[int | None, ...] | None

    @property
    def elements(self) -> int | None:
        """Element count per sample, or None if any dimension is unknown."""
        if self.shape is None or any(d is None for d in self.shape):
            return None
        return math.prod(d for d in self.shape if d is not None)

    @property
    def dtype_name(self) -> str:
        return onnx.helper.tensor_dtype_to_np_dtype(self.elem_type).name if self.elem_type else "?"

    def describe_shape(self) -> str:
        if self.shape is None:
            return "?"
        return "(" + ", ".join("?" if d is None else str(d) for d in self.shape) + ")"


@dataclass(frozen=True)
class CutPoint:
    """A candidate cut: its tensors, per-sample elements, and where in the order it falls.

    ``position`` is the index in topological order of the node producing the last
    of the cut's tensors.
    """

    tensors: tuple[str, ...]
    infos: tuple[TensorInfo, ...]
    position: int

    @property
    def tensor(self) -> str:
        """The tensor name of a single-tensor cut; names joined by commas otherwise."""
        return ",".join(self.tensors)

    @property
    def elements(self) -> int | None:
        counts = [info.elements for info in self.infos]
        if any(c is None for c in counts):
            return None
        return sum(c for c in counts if c is not None)

    def wire_bytes(self, encoding: str) -> int | None:
        """Bytes per sample to send the cut in ``encoding`` (fp32, f16 or i8)."""
        elements = self.elements
        return None if elements is None else elements * WIRE_BYTES[encoding]


@dataclass
class ModelGraph:
    """A loaded model in topological order, with per-sample tensor info.

    ``model`` is the original model with its nodes topologically sorted; ``inputs``
    are the real graph inputs (initializers that older exporters also list as inputs
    are excluded).
    """

    path: Path
    model: ModelProto
    nodes: list[NodeProto]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tensors: dict[str, TensorInfo]
    producer: dict[str, int]
    # per node: every tensor it reads, including those its subgraphs (If/Loop bodies)
    # read from the outer scope, which NodeProto.input does not list
    node_inputs: list[tuple[str, ...]]
    # external-data files the model's weights were read from ("" when inline)
    external: tuple[str, ...] = ()
    _batched: dict[str, tuple[ModelProto, list[str]]] = field(default_factory=dict, repr=False)

    def batched_model(self, batch_dim: str) -> ModelProto:
        """The model with a named dynamic batch axis and shapes inferred, cached.

        Literal batch-1 Reshapes and Flattens are made polymorphic where provably
        safe (:mod:`.batchaxis`); :meth:`batch_rewrites` names them. Cached because
        re-inferring shapes for every profiled cut of a large model would cost more
        than the timing it serves.
        """
        return self._batched_entry(batch_dim)[0]

    def batch_rewrites(self, batch_dim: str) -> list[str]:
        """Nodes whose literal batch of 1 :meth:`batched_model` made polymorphic."""
        return self._batched_entry(batch_dim)[1]

    def _batched_entry(self, batch_dim: str) -> tuple[ModelProto, list[str]]:
        if batch_dim not in self._batched:
            model, rewritten = batch_dynamic(
                with_batch(self.model, batch_dim), batch_dim, self.path.name
            )
            # Shapes on the intermediate tensors, for the extractor's boundaries.
            del model.graph.value_info[:]
            model.graph.value_info.extend(infer_skeleton(model, self.path.name).graph.value_info)
            self._batched[batch_dim] = (model, rewritten)
        return self._batched[batch_dim]

    def info(self, name: str) -> TensorInfo:
        return self.tensors.get(name, TensorInfo(name, 0, None))

    def is_tensor(self, name: str) -> bool:
        """Whether ``name`` is any tensor of the graph: input, node output or initializer."""
        if name in self.producer or name in self.inputs:
            return True
        return any(t.name == name for t in self.model.graph.initializer)

    def input_elements(self) -> int | None:
        counts = [self.info(name).elements for name in self.inputs]
        if any(c is None for c in counts):
            return None
        return sum(c for c in counts if c is not None)


def load_graph(model_path: str | Path) -> ModelGraph:
    """Load ``model_path``, sort it topologically and infer per-sample shapes."""
    path = Path(model_path)
    model, external = load_model(path)
    initializers = {t.name for t in model.graph.initializer}
    inputs = tuple(v.name for v in model.graph.input if v.name not in initializers)
    outputs = tuple(v.name for v in model.graph.output)
    node_inputs_unsorted = [_reads(node) for node in model.graph.node]
    order = _topological_order(model.graph.node, node_inputs_unsorted, path)
    nodes = [model.graph.node[i] for i in order]
    node_inputs = [node_inputs_unsorted[i] for i in order]
    sorted_model = model  # freshly loaded: sort it in place
    del sorted_model.graph.node[:]
    sorted_model.graph.node.extend(nodes)
    producer = {out: idx for idx, node in enumerate(nodes) for out in node.output if out}
    tensors = _infer_tensor_infos(with_batch(sorted_model, 1), path)
    return ModelGraph(
        path, sorted_model, nodes, inputs, outputs, tensors, producer, node_inputs, external
    )


def candidate_cuts(graph: ModelGraph) -> list[CutPoint]:
    """Every single tensor that separates the graph inputs from the outputs, in order.

    Graph inputs and outputs themselves are not listed: "all on cloud" and "all on
    edge" are separate options of the profiler, not cuts.
    """
    live_nodes = _nodes_reaching_outputs(graph)
    tainted = _tainted_tensors(graph, blocked=frozenset())
    # Last consumer (topological index) of every tensor; graph outputs live to the end.
    last_use: dict[str, int] = {}
    for idx, reads in enumerate(graph.node_inputs):
        if idx in live_nodes:
            for name in reads:
                last_use[name] = idx
    end = len(graph.nodes)
    for name in graph.outputs:
        last_use[name] = end
    # Walk the order keeping the input-dependent tensors still waiting for a consumer.
    # After dead branches are pruned, a tensor is a single-tensor cut exactly when it
    # is the only one alive right after its producer runs: every ancestor of a cut
    # comes before it and every descendant after, so anything else alive would be a
    # path around it.
    alive: set[str] = {name for name in graph.inputs if name in last_use}
    cuts: list[CutPoint] = []
    for idx, node in enumerate(graph.nodes):
        if idx not in live_nodes:
            continue
        alive = {name for name in alive if last_use[name] > idx}
        produced = [o for o in node.output if o and o in tainted and last_use.get(o, -1) > idx]
        alive.update(produced)
        if len(alive) == 1 and len(produced) == 1:
            name = produced[0]
            if name not in graph.outputs:
                cuts.append(CutPoint((name,), (graph.info(name),), idx))
    return cuts


def check_cut(graph: ModelGraph, tensors: Sequence[str]) -> CutPoint:
    """Validate a user-named cut and describe it; ``ConfigError`` if it is not a cut.

    Unknown names are reported with the list of single-tensor candidates; a set that
    a path goes around is reported with the graph output that the path reaches.
    """
    if not tensors:
        raise ConfigError("cut: name at least one tensor")
    names = tuple(dict.fromkeys(tensors))
    unknown = [n for n in names if not graph.is_tensor(n)]
    if unknown:
        candidates = [c.tensor for c in candidate_cuts(graph)]
        near = _nearest(unknown[0], candidates, graph)
        listing = ", ".join(candidates[:_LISTED]) or "(none)"
        if len(candidates) > _LISTED:
            listing += f", ... ({len(candidates) - _LISTED} more; see `jetsplit profile`)"
        hint = f"nearest: {', '.join(near)}; " if near else ""
        raise ConfigError(
            f"{graph.path.name}: no tensor named {', '.join(repr(n) for n in unknown)}; "
            f"{hint}candidate cuts: {listing}"
        )
    inputs = [n for n in names if n in graph.inputs]
    # A graph input may ride along with computed tensors (a second input the tail
    # reads), but a cut of inputs only leaves the head nothing to do.
    if len(inputs) == len(names):
        raise ConfigError(
            f"{graph.path.name}: {', '.join(repr(n) for n in inputs)} is a graph input; a cut "
            'names tensors the head computes (sending the input is "all on cloud")'
        )
    constant = [
        n for n in names if n not in graph.inputs and n not in _tainted_tensors(graph, frozenset())
    ]
    if constant:
        raise ConfigError(
            f"{graph.path.name}: {', '.join(repr(n) for n in constant)} does not depend on the "
            "graph inputs (a constant); it cannot be a cut"
        )
    tainted = _tainted_tensors(graph, blocked=frozenset(names))
    leaked = [out for out in graph.outputs if out in tainted and out not in names]
    if leaked:
        raise ConfigError(
            f"{graph.path.name}: {', '.join(repr(n) for n in names)} is not a cut: output "
            f"{leaked[0]!r} is reachable from the inputs by a path that goes around it "
            "(name every tensor that crosses the boundary, e.g. a residual block's skip too)"
        )
    position = max(graph.producer.get(n, -1) for n in names)
    return CutPoint(names, tuple(graph.info(n) for n in names), position)


def with_batch(model: ModelProto, batch: int | str) -> ModelProto:
    """A copy of ``model`` whose graph inputs and outputs have batch dim ``batch``.

    An int fixes it (1 for per-sample shapes); a string makes it a named dynamic dim.
    Stale intermediate ``value_info`` is dropped so shape inference recomputes it.
    """
    out = copy.deepcopy(model)
    initializers = {t.name for t in out.graph.initializer}
    for value in [v for v in out.graph.input if v.name not in initializers] + list(
        out.graph.output
    ):
        tensor_type = value.type.tensor_type
        if not tensor_type.HasField("shape") or len(tensor_type.shape.dim) == 0:
            continue
        dim = tensor_type.shape.dim[0]
        if isinstance(batch, int):
            dim.Clear()
            dim.dim_value = batch
        else:
            dim.Clear()
            dim.dim_param = batch
    del out.graph.value_info[:]
    return out


# -- helpers -------------------------------------------------------------------


def _reads(node: NodeProto) -> tuple[str, ...]:
    names = [n for n in node.input if n]
    names.extend(sorted(_outer_scope_reads(node)))
    return tuple(dict.fromkeys(names))


def _outer_scope_reads(node: NodeProto) -> set[str]:
    """Names a node's subgraphs read from the enclosing graph."""
    found: set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs)
        if attr.HasField("g"):
            graphs.append(attr.g)
        for sub in graphs:
            defined = {v.name for v in sub.input} | {t.name for t in sub.initializer}
            for inner in sub.node:
                defined.update(o for o in inner.output if o)
            for inner in sub.node:
                found.update(n for n in inner.input if n and n not in defined)
                found.update(n for n in _outer_scope_reads(inner) if n not in defined)
            found.update(v.name for v in sub.output if v.name not in defined)
    return found


def _topological_order(
    nodes: Sequence[NodeProto], reads: Sequence[tuple[str, ...]], path: Path
) -> list[int]:
    # Kahn's algorithm, taking the lowest index first so an already sorted model
    # keeps its order (and its exporter's node numbering stays readable).
    import heapq

    producer = {out: idx for idx, node in enumerate(nodes) for out in node.output if out}
    waiting = [0] * len(nodes)
    consumers: dict[int, list[int]] = {i: [] for i in range(len(nodes))}
    for idx, names in enumerate(reads):
        deps = {producer[n] for n in names if n in producer}
        waiting[idx] = len(deps)
        for dep in deps:
            consumers[dep].append(idx)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        idx = heapq.heappop(ready)
        order.append(idx)
        for nxt in consumers[idx]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, nxt)
    if len(order) != len(nodes):
        stuck = [
            nodes[i].name or nodes[i].op_type for i in range(len(nodes)) if i not in set(order)
        ]
        raise EngineError(f"{path.name}: the graph has a cycle through {', '.join(stuck[:5])}")
    return order


def _infer_tensor_infos(model: ModelProto, path: Path) -> dict[str, TensorInfo]:
    inferred = infer_skeleton(model, path.name)
    infos: dict[str, TensorInfo] = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        tensor_type = value.type.tensor_type
        shape: tuple[int | None, ...] | None = None
        if tensor_type.HasField("shape"):
            shape = tuple(
                d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim
            )
        infos[value.name] = TensorInfo(value.name, tensor_type.elem_type, shape)
    return infos


def _nearest(name: str, candidates: Sequence[str], graph: ModelGraph) -> list[str]:
    """Candidate cuts, then any tensors, whose names are closest to ``name``."""
    import difflib

    near = difflib.get_close_matches(name, candidates, n=3, cutoff=0.5)
    if not near:
        near = difflib.get_close_matches(name, list(graph.producer), n=3, cutoff=0.6)
    return near


def _tainted_tensors(graph: ModelGraph, blocked: frozenset[str]) -> set[str]:
    """Tensors reachable from the graph inputs without passing through ``blocked``."""
    tainted = {name for name in graph.inputs if name not in blocked}
    for idx, node in enumerate(graph.nodes):
        if any(name in tainted for name in graph.node_inputs[idx]):
            tainted.update(o for o in node.output if o and o not in blocked)
    return tainted


def _nodes_reaching_outputs(graph: ModelGraph) -> set[int]:
    needed: set[str] = set(graph.outputs)
    live: set[int] = set()
    for idx in range(len(graph.nodes) - 1, -1, -1):
        if any(o in needed for o in graph.nodes[idx].output):
            live.add(idx)
            needed.update(graph.node_inputs[idx])
    return live
