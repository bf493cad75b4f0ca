"""The zoo's networks, cheapest to dearest, and BatchNorm folding for export.

- ``little``: :class:`LittleNet`, the edge model of the little/big cascade;
- ``big``: :class:`BigNet`, ResNet-style, the cloud model; :class:`BigHead` (with
  the early :class:`ExitHead`) and :class:`BigTail` are its split halves;
- ``ens0``..``ens3``: :data:`ENSEMBLE`, four families, cheapest first.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

__all__ = [
    "ENSEMBLE", "AllConvNet", "BigHead", "BigNet", "BigTail", "Block", "ConvBN", "ExitHead",
    "LeNet", "LittleNet", "VGGNet", "fuse_model",
]


class ConvBN(nn.Sequential):
    """Conv without bias followed by BatchNorm; :func:`fuse_model` folds the pair."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
        )


class LittleNet(nn.Module):
    """Tiny CNN for the edge: two strided convs (6 and 12 channels) and one linear layer.

    Deliberately minimal (about 0.13 MFLOPs, some 500x less than big): with
    augmentation even this reaches about 97.5%, and a margin gate hands the rest to big.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBN(1, 6, 5, stride=2)
        self.conv2 = ConvBN(6, 12, 3, stride=2)
        self.fc = nn.Linear(12 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.fc(torch.flatten(x, 1))


class VGGNet(nn.Module):
    """Ensemble member: VGG-style, two k x k convs per stage, width ``w`` then ``2w``."""

    def __init__(self, w: int, k: int = 3) -> None:
        super().__init__()
        self.conv1 = ConvBN(1, w, k)
        self.conv2 = ConvBN(w, w, k)
        self.conv3 = ConvBN(w, 2 * w, 3)
        self.conv4 = ConvBN(2 * w, 2 * w, 3)
        self.drop = nn.Dropout(0.25)
        self.fc = nn.Linear(2 * w * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.conv3(x))
        x = F.max_pool2d(F.relu(self.conv4(x)), 2)
        return self.fc(self.drop(torch.flatten(x, 1)))


class LeNet(nn.Module):
    """Ensemble member: LeNet-style, two 5x5 conv+pool stages and a hidden layer."""

    def __init__(self, w: int, hidden: int = 128) -> None:
        super().__init__()
        self.conv1 = ConvBN(1, w, 5)
        self.conv2 = ConvBN(w, 2 * w, 5)
        self.drop = nn.Dropout(0.4)
        self.hidden = nn.Linear(2 * w * 7 * 7, hidden)
        self.fc = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.hidden(self.drop(torch.flatten(x, 1))))
        return self.fc(self.drop(x))


class AllConvNet(nn.Module):
    """Ensemble member: strided 3x3 convs, no max pooling, global average pooling head."""

    def __init__(self, w: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(1, w, 3)
        self.conv2 = ConvBN(w, 2 * w, 3, 2)
        self.conv3 = ConvBN(2 * w, 2 * w, 3)
        self.conv4 = ConvBN(2 * w, 4 * w, 3, 2)
        self.conv5 = ConvBN(4 * w, 4 * w, 3)
        self.fc = nn.Linear(4 * w, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4, self.conv5):
            x = F.relu(conv(x))
        return self.fc(x.mean(dim=(2, 3)))


class Block(nn.Module):
    """Basic residual block (two 3x3 convs), 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvBN(cin, cout, 3, stride)
        self.conv2 = ConvBN(cout, cout, 3)
        self.shortcut: nn.Module = (
            ConvBN(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + self.shortcut(x))


class BigNet(nn.Module):
    """ResNet-style cloud model: stem 32@28x28, blocks 32@28, 64@14, 128@7, pool, fc."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = ConvBN(1, 32, 3)
        self.block1 = Block(32, 32, 1)
        self.block2 = Block(32, 64, 2)
        self.block3 = Block(64, 128, 2)
        self.fc = nn.Linear(128, 10)

    def front(self, x: torch.Tensor) -> torch.Tensor:
        """Stem + block1 + block2: what the edge runs in split mode."""
        return self.block2(self.block1(F.relu(self.stem(x))))

    def back(self, act: torch.Tensor) -> torch.Tensor:
        """Block3 + pooling + classifier: what the cloud runs in split mode."""
        x = self.block3(act)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.back(self.front(x))


class ExitHead(nn.Module):
    """Early exit on block-2 activations: 2x2 average pooling then one linear layer."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels * 4, 10)

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(act, 2), 1))


class BigHead(nn.Module):
    """Edge half of the split: outputs (act, exit_logits, feat).

    Holds big's own submodules under the same attribute names so the exported
    intermediate tensors read ``/block2/...`` as in big.onnx.
    """

    def __init__(self, big: BigNet, exit_head: ExitHead) -> None:
        super().__init__()
        self.stem, self.block1, self.block2 = big.stem, big.block1, big.block2
        self.exit = exit_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        act = self.block2(self.block1(F.relu(self.stem(x))))
        # feat is the global-average-pooled activation that learned gates train on.
        return act, self.exit(act), act.mean(dim=(2, 3))


class BigTail(nn.Module):
    """Cloud half of the split: block3 + pool + fc on the carried activation."""

    def __init__(self, big: BigNet) -> None:
        super().__init__()
        self.block3, self.fc = big.block3, big.fc

    def forward(self, act: torch.Tensor) -> torch.Tensor:
        x = self.block3(act)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def fuse_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy with every ConvBN folded into one biased Conv.

    Done explicitly rather than trusting the exporter's peephole pass, so the ONNX
    graphs never contain BatchNormalization whatever the exporter version does.
    """
    fused = copy.deepcopy(model).eval()
    for module in fused.modules():
        if isinstance(module, ConvBN):
            conv, bn = module[0], module[1]
            assert isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d)
            module[0] = fuse_conv_bn_eval(conv, bn)
            module[1] = nn.Identity()
    return fused


# Ensemble members, cheapest first. Four architecture families rather than one family
# at four widths: members of one family mostly agreed on their mistakes, and mixing
# inductive biases (pooling vs strides, 3x3 vs 5x5, flatten vs global pooling) is the
# cheapest way to make them disagree, which is what softmax averaging feeds on.
ENSEMBLE: tuple[tuple[str, Callable[[], nn.Module]], ...] = (
    ("VGG-style 3x3, width 8", lambda: VGGNet(8, 3)),
    ("LeNet-style 5x5, width 16, hidden 128", lambda: LeNet(16)),
    ("all-conv strided, width 16, global average pool", lambda: AllConvNet(16)),
    ("VGG-style 5x5, width 16", lambda: VGGNet(16, 5)),
)
