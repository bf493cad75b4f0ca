"""ONNX export of the zoo's models and what is measured on the exported files.

Accuracies are measured with jetsplit's own ONNX Runtime engine on the exported
files, so they describe exactly what the runtime will load.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from jetsplit.calibration.exits import MAX_IR_VERSION, run_batched
from jetsplit.engines import open_engine

__all__ = ["OPSET", "PARAMS_NOTE", "export", "onnx_params", "run_onnx", "smoke_test"]

OPSET = 17
PARAMS_NOTE = "params = number of float elements in the exported ONNX file's initializers"


def export(
    model: nn.Module,
    example: torch.Tensor,
    path: Path,
    input_name: str,
    output_names: Sequence[str],
) -> None:
    """TorchScript export (dynamo=False keeps readable names), batch axis dynamic."""
    model = model.eval()
    dynamic = {name: {0: "N"} for name in (input_name, *output_names)}
    torch.onnx.export(
        model,
        (example,),
        str(path),
        input_names=[input_name],
        output_names=list(output_names),
        dynamic_axes=dynamic,
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    proto = onnx.load(str(path))
    ops = {node.op_type for node in proto.graph.node}
    assert "BatchNormalization" not in ops, f"{path.name}: BatchNorm left in the graph"
    # ONNX Runtime refuses the IR version 14 that onnx 1.23 writes by default.
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def run_onnx(path: Path, x: np.ndarray, batch: int = 250) -> dict[str, np.ndarray]:
    """Every output of the model on ``x``, computed in batches."""
    parts: dict[str, list[np.ndarray]] = {}
    for out in run_batched(path, x, batch=batch):
        for name, value in out.items():
            parts.setdefault(name, []).append(value)
    return {n: np.concatenate(v) for n, v in parts.items()}


def smoke_test(path: Path, x: np.ndarray) -> None:
    """The file loads in ONNX Runtime and runs at batch 1 and batch 7."""
    with open_engine(path) as eng:
        name = eng.inputs[0].name
        for n in (1, 7):
            outs = eng.infer({name: x[:n]})
            assert all(o.shape[0] == n for o in outs.values()), (
                f"{path.name}: batch {n} -> {[o.shape for o in outs.values()]}"
            )


def onnx_params(path: Path) -> int:
    proto = onnx.load(str(path))
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in proto.graph.initializer))
