"""FLOPs as ``zoo.json`` reports them (see :data:`FLOPS_NOTE`)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FLOPS_NOTE", "count_flops"]

FLOPS_NOTE = (
    "flops = 2 x multiply-adds of every Conv and Gemm/Linear layer at batch 1 "
    "(conv: output elements x in_channels/groups x kh x kw; linear: in x out); "
    "biases, BatchNorm (folded into the convs), ReLU, pooling and residual adds are not counted"
)


def count_flops(model: nn.Module, example: torch.Tensor) -> int:
    """2 x multiply-adds of Conv2d and Linear layers at batch 1 (see FLOPS_NOTE)."""
    macs = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            macs += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            macs += module.in_features * module.out_features

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        model(example[:1])
    for h in handles:
        h.remove()
    return 2 * macs
