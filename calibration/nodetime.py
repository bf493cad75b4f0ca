"""Per-node times from one profiled run of the whole model (ONNX Runtime's profiler).

Timing every candidate head in a session of its own costs one session per cut
(minutes on ResNet-50) and reads high: a head alone pays the session's fixed costs
and loses the fusions and memory reuse of the whole model, so late cuts read above
100% of the whole. Instead the whole model runs in one session with profiling on,
and a cut's edge time is the share of the per-node kernel times spent in the cut's
ancestors, scaled to the whole model's wall time.

The profiled session runs with ONNX Runtime's basic optimisations only: fusions
(Conv+ReLU, Conv+BatchNorm) would hide a cut inside the fused group (its head
would read 0 ms), and the blocked-layout pass renames nodes after their output
tensors. The shares come from this run; the wall time they scale is the whole
model timed as it runs in production (:func:`jetsplit.calibration.profile.measure`).
Each node is named ``jsp<index>`` in a temporary copy; a kernel is matched to a
node by that name or by the tensor it is named after (suffixes stripped), and a
kernel of no node of ours counts with the next one of ours that runs.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from jetsplit.errors import ConfigError, EngineError

from .graph import ModelGraph
from .modelfile import save_model

__all__ = ["NodeProfile", "ancestors", "profile_nodes"]

_NAME = re.compile(r"^jsp(\d+)$")
_SUFFIX = "_kernel_time"


@dataclass(frozen=True)
class NodeProfile:
    """Median wall time of the whole model and median kernel time per node (ms)."""

    full_ms: float
    node_ms: tuple[float, ...]  # per node of ModelGraph.nodes, in its order
    runs: int

    def share(self, nodes: Iterable[int]) -> float:
        """The share of the kernel time that ``nodes`` (a head) take, 0 to 1."""
        total = sum(self.node_ms)
        if total <= 0:
            return 0.0
        return sum(self.node_ms[i] for i in set(nodes)) / total

    def head_ms(self, nodes: Iterable[int]) -> float:
        """Edge time of a head made of ``nodes``: its share of the profiled wall time."""
        return self.full_ms * self.share(nodes)


def ancestors(graph: ModelGraph, tensors: Sequence[str]) -> set[int]:
    """Indices of the nodes a head computing ``tensors`` runs."""
    found: set[int] = set()
    todo = [graph.producer[t] for t in tensors if t in graph.producer]
    while todo:
        idx = todo.pop()
        if idx in found:
            continue
        found.add(idx)
        todo.extend(graph.producer[n] for n in graph.node_inputs[idx] if n in graph.producer)
    return found


def profile_nodes(graph: ModelGraph, sample: Mapping[str, np.ndarray], runs: int = 15,
                  warmup: int = 3, threads: int = 1) -> NodeProfile:
    """Run the whole model ``warmup + runs`` times with ONNX Runtime's profiler on."""
    import onnxruntime as ort

    if runs < 1:
        raise ConfigError(f"runs: expected at least 1, got {runs}")
    with tempfile.TemporaryDirectory(prefix="jetsplit-nodetime-") as tmp:
        named = onnx.ModelProto()
        named.CopyFrom(graph.model)
        for i, node in enumerate(named.graph.node):
            node.name = f"jsp{i}"
        path = Path(tmp) / "named.onnx"
        save_model(named, path, external=bool(graph.external))
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        try:
            session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
            for _ in range(warmup + runs):
                session.run(None, dict(sample))
            events = json.loads(Path(session.end_profiling()).read_text())
        except Exception as exc:  # ORT raises its own untyped errors
            raise EngineError(f"{graph.path.name}: profiled run failed: {str(exc).splitlines()[0]}") from exc
    model_runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[warmup:]
    kernels = sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"])
    index = {out: i for out, i in graph.producer.items()}
    per_run = [_node_times(run, kernels, index, len(graph.nodes)) for run in model_runs]
    node_ms = tuple(statistics.median(times[i] for times in per_run) for i in range(len(graph.nodes)))
    full_ms = statistics.median(run["dur"] / 1e3 for run in model_runs)
    return NodeProfile(full_ms, node_ms, len(model_runs))


def _node_of(event_name: str, producer: Mapping[str, int]) -> int:
    """The node index a kernel event belongs to, or -1 (see the module doc)."""
    key = event_name[: -len(_SUFFIX)] if event_name.endswith(_SUFFIX) else event_name
    while key:
        match = _NAME.match(key)
        if match:
            return int(match.group(1))
        if key in producer:
            return producer[key]
        if "_" not in key:
            break
        key = key.rsplit("_", 1)[0]
    return -1


def _node_times(run: dict, kernels: list[dict], producer: Mapping[str, int], count: int) -> list[float]:
    """Kernel ms per node within one ``model_run`` event."""
    start, end = run["ts"], run["ts"] + run["dur"]
    times = [0.0] * count
    pending = 0.0  # kernels of no node of ours, waiting for the next one
    for event in kernels:
        if not start <= event["ts"] <= end:
            continue
        ms = event["dur"] / 1e3
        index = _node_of(event["name"], producer)
        if 0 <= index < count:
            times[index] += ms + pending
            pending = 0.0
        else:
            pending += ms
    if pending and count:  # a reorder after the last node of ours
        times[count - 1] += pending
    return times
