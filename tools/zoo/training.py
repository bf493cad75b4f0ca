"""Training loops: AdamW with a one-cycle schedule, and the frozen-backbone exit."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from jetsplit.tools.zoo.data import augment
from jetsplit.tools.zoo.models import BigNet, ExitHead

__all__ = ["train", "train_exit_head"]

ModuleT = TypeVar("ModuleT", bound=nn.Module)


def train(
    factory: Callable[[], ModuleT],
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch: int,
    aug: float,
    label_smoothing: float = 0.0,
    name: str = "",
) -> ModuleT:
    """Build ``factory()`` and train it: AdamW, one-cycle schedule, on-the-fly augmentation.

    The model is built after seeding so its initial weights depend on ``seed`` alone,
    not on whatever consumed the global RNG before.
    """
    torch.manual_seed(seed)
    model = factory()
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps_per_epoch = math.ceil(len(xt) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    t0 = time.perf_counter()
    for epoch in range(epochs):
        model.train()
        # The splits come sorted by class, so shuffling every epoch is essential.
        order = torch.randperm(len(xt), generator=gen)
        total, correct, loss_sum = 0, 0, 0.0
        for i in range(0, len(xt), batch):
            idx = order[i : i + batch]
            xb, yb = xt[idx], yt[idx]
            if aug > 0:
                xb = augment(xb, gen, aug)
            out = model(xb)
            loss = F.cross_entropy(out, yb, label_smoothing=label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(idx)
            correct += int((out.argmax(1) == yb).sum())
            total += len(idx)
        if epoch == epochs - 1 or epoch % 5 == 0:
            print(
                f"  {name} epoch {epoch + 1}/{epochs} loss {loss_sum / total:.4f} "
                f"train-acc {correct / total:.4f} ({time.perf_counter() - t0:.0f}s)",
                flush=True,
            )
    return model.eval()


def train_exit_head(big: BigNet, x: np.ndarray, y: np.ndarray, seed: int, epochs: int) -> ExitHead:
    """Train the exit on frozen block-2 features, so big's own accuracy is untouched.

    The backbone runs once per augmented copy of the training set (cheap compared
    with back-propagating through it) and the linear exit trains on the cached
    pooled activations.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    big.eval()
    xt = torch.from_numpy(x)
    feats, labels = [], []
    with torch.no_grad():
        for copy_index in range(4):
            for i in range(0, len(xt), 500):
                xb = xt[i : i + 500]
                if copy_index > 0:
                    xb = augment(xb, gen, 1.0)
                feats.append(torch.flatten(F.adaptive_avg_pool2d(big.front(xb), 2), 1))
            labels.append(torch.from_numpy(y))
    ft, yt = torch.cat(feats), torch.cat(labels)
    head = ExitHead(ft.shape[1] // 4)
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    for _ in range(epochs):
        order = torch.randperm(len(ft), generator=gen)
        for i in range(0, len(ft), 128):
            idx = order[i : i + 128]
            loss = F.cross_entropy(head.fc(ft[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    return head.eval()
