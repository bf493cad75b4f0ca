"""Train the demo zoo on MNIST and export it as ONNX (``python -m jetsplit.demo.build_zoo``).

The zoo feeds the three demo modes: ``little``/``big`` (big/little cascade),
``ens0``..``ens3`` (flexible ensemble, cheapest first) and ``big_head``/``big_tail``
(big split after its second block, with an early exit on the head). Everything is
trained on CPU with fixed seeds on the ``train`` split only; accuracies written to
``zoo.json`` are measured with ONNX Runtime on the exported files, so they describe
exactly what the runtime will load.

torch is imported only here: it is a build-time tool, never a dependency of the
``jetsplit`` package (install it with ``pip install torch==2.13.0``, the CPU wheel).
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from jetsplit.datasets import load_dataset

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
MEAN = 0.1307
STD = 0.3081
OPSET = 17
# ONNX Runtime 1.31 refuses the IR version 14 that onnx 1.23 writes by default.
MAX_IR_VERSION = 10
MAX_ZOO_BYTES = 10 * 1024 * 1024
ModuleT = TypeVar("ModuleT", bound=nn.Module)
FLOPS_NOTE = (
    "flops = 2 x multiply-adds of every Conv and Gemm/Linear layer at batch 1 "
    "(conv: output elements x in_channels/groups x kh x kw; linear: in x out); "
    "biases, BatchNorm (folded into the convs), ReLU, pooling and residual adds are not counted"
)
PARAMS_NOTE = "params = number of float elements in the exported ONNX file's initializers"


# ---------------------------------------------------------------- data


def preprocess(images: np.ndarray) -> np.ndarray:
    """The runtime's preprocessing contract: uint8 (N,28,28) -> float32 NCHW, standardised."""
    x = images.astype(np.float32) / 255.0
    x = (x - MEAN) / STD
    return x[:, None, :, :].astype(np.float32)


def load_split(split: str) -> tuple[np.ndarray, np.ndarray]:
    ds = load_dataset("mnist", split)
    assert isinstance(ds.images, np.ndarray)
    return preprocess(ds.images), np.asarray(ds.labels, dtype=np.int64)


def augment(x: torch.Tensor, gen: torch.Generator, strength: float) -> torch.Tensor:
    """Random small rotation, scale, shear and shift of a standardised batch.

    Applied in raw [0, 1] pixel space so the padding that grid_sample introduces is
    black (0), like the digits' real background, and standardised again afterwards.
    """
    n = x.shape[0]
    raw = x * STD + MEAN

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    angle = uniform(-12.0, 12.0) * strength * math.pi / 180.0
    scale = uniform(1.0 - 0.1 * strength, 1.0 + 0.1 * strength)
    shear = uniform(-0.15, 0.15) * strength
    # affine_grid works in [-1, 1] coordinates: one pixel of 28 is 2/28.
    shift = 2.5 * strength * 2.0 / 28.0
    tx, ty = uniform(-shift, shift), uniform(-shift, shift)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [
            torch.stack([cos, -sin + shear * cos, tx], dim=1),
            torch.stack([sin, cos + shear * sin, ty], dim=1),
        ],
        dim=1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    raw = F.grid_sample(raw, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return (raw - MEAN) / STD


# ---------------------------------------------------------------- models


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


# ---------------------------------------------------------------- training


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


# ---------------------------------------------------------------- export and measurement


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
    if proto.ir_version > MAX_IR_VERSION:
        proto.ir_version = MAX_IR_VERSION
        onnx.save(proto, str(path))
    onnx.checker.check_model(str(path))


def session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def run_onnx(path: Path, x: np.ndarray, batch: int = 250) -> dict[str, np.ndarray]:
    """Every output of the model on ``x``, computed in batches."""
    sess = session(path)
    input_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for i in range(0, len(x), batch):
        for name, value in zip(names, sess.run(names, {input_name: x[i : i + batch]}), strict=True):
            parts[name].append(value)
    return {n: np.concatenate(v) for n, v in parts.items()}


def smoke_test(path: Path, x: np.ndarray) -> None:
    """The file loads in ONNX Runtime and runs at batch 1 and batch 7."""
    sess = session(path)
    input_name = sess.get_inputs()[0].name
    for n in (1, 7):
        outs = sess.run(None, {input_name: x[:n]})
        assert all(o.shape[0] == n for o in outs), (
            f"{path.name}: batch {n} -> {[o.shape for o in outs]}"
        )


def onnx_params(path: Path) -> int:
    proto = onnx.load(str(path))
    return int(sum(np.prod(t.dims, dtype=np.int64) for t in proto.graph.initializer))


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def margin(probs: np.ndarray) -> np.ndarray:
    top2 = np.sort(probs, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    return float((logits.argmax(1) == y).mean())


# ---------------------------------------------------------------- gate checks


def _candidates(scores: np.ndarray) -> np.ndarray:
    """Thresholds worth trying: every distinct score, plus 'accept all' and 'accept none'."""
    return np.unique(np.concatenate([[0.0, 1.1], scores]))


def cascade_check(
    little: dict[str, np.ndarray], big: dict[str, np.ndarray], y: dict[str, np.ndarray]
) -> dict[str, float]:
    """Little->big with a margin gate: fewest samples to big keeping big_acc - 0.002.

    The threshold is chosen on calib and applied unchanged to test.
    """

    def evaluate(split: str, t: float) -> tuple[float, float]:
        m = margin(softmax(little[split]))
        pred = np.where(m >= t, little[split].argmax(1), big[split].argmax(1))
        return float((m < t).mean()), float((pred == y[split]).mean())

    target = accuracy(big["calib"], y["calib"]) - 0.002
    best = 1.1
    for t in _candidates(margin(softmax(little["calib"]))):
        # Ascending thresholds send ever more to big, so the first that reaches
        # the target sends the fewest.
        if evaluate("calib", float(t))[1] >= target:
            best = float(t)
            break
    calib_frac, calib_acc = evaluate("calib", best)
    test_frac, test_acc = evaluate("test", best)
    return {
        "threshold": best,
        "calib_fraction_to_big": calib_frac,
        "calib_accuracy": calib_acc,
        "calib_big_accuracy": accuracy(big["calib"], y["calib"]),
        "test_fraction_to_big": test_frac,
        "test_accuracy": test_acc,
        "test_big_accuracy": accuracy(big["test"], y["test"]),
        "test_little_accuracy": accuracy(little["test"], y["test"]),
    }


def ensemble_check(
    members: list[dict[str, np.ndarray]], flops: list[int], y: dict[str, np.ndarray]
) -> dict[str, object]:
    """Flexible ensemble: averaged softmax, margin gate after each member but the last.

    Thresholds (one per gate) are a grid search on calib for the least mean FLOPs
    with accuracy >= full-ensemble accuracy - 0.001; then applied to test.
    """
    k = len(members)
    cum_flops = np.cumsum(flops) / float(sum(flops))

    def stage_outputs(split: str) -> tuple[np.ndarray, np.ndarray]:
        probs = np.stack([softmax(m[split]) for m in members])  # (k, N, 10)
        avg = np.cumsum(probs, axis=0) / np.arange(1, k + 1)[:, None, None]
        correct = avg.argmax(2) == y[split][None, :]
        margins = np.stack([margin(a) for a in avg])
        return correct, margins

    outputs = {split: stage_outputs(split) for split in ("calib", "test")}

    def evaluate(split: str, thresholds: Sequence[float]) -> tuple[float, float]:
        correct, margins = outputs[split]
        n = correct.shape[1]
        exit_stage = np.full(n, k - 1)
        pending = np.ones(n, dtype=bool)
        for s, t in enumerate(thresholds):
            stop = pending & (margins[s] >= t)
            exit_stage[stop] = s
            pending &= ~stop
        acc = float(correct[exit_stage, np.arange(n)].mean())
        return float(cum_flops[exit_stage].mean()), acc

    correct, margins = outputs["calib"]
    target = float(correct[-1].mean()) - 0.001
    # A coarse grid of quantiles keeps the (k-1)-dimensional search small.
    grids = [
        np.unique(np.concatenate([[1.1], np.quantile(margins[s], np.linspace(0, 1, 41))]))
        for s in range(k - 1)
    ]
    best: tuple[float, tuple[float, ...]] = (1.0, tuple(1.1 for _ in range(k - 1)))
    for combo in np.array(np.meshgrid(*grids, indexing="ij")).reshape(k - 1, -1).T:
        cost, acc = evaluate("calib", combo)
        if acc >= target and cost < best[0]:
            best = (cost, tuple(float(t) for t in combo))
    thresholds = best[1]
    calib_cost, calib_acc = evaluate("calib", thresholds)
    test_cost, test_acc = evaluate("test", thresholds)
    test_correct, _ = outputs["test"]
    return {
        "thresholds": list(thresholds),
        "calib_flops_fraction": calib_cost,
        "calib_accuracy": calib_acc,
        "calib_full_accuracy": float(correct[-1].mean()),
        "test_flops_fraction": test_cost,
        "test_accuracy": test_acc,
        "test_full_accuracy": float(test_correct[-1].mean()),
    }


# ---------------------------------------------------------------- main


def build(out_dir: Path, epoch_scale: float) -> dict[str, object]:
    torch.set_num_threads(2)
    # Deterministic kernels: the same seeds give the same zoo on the same machine.
    torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = load_split("train")
    xs = {s: load_split(s)[0] for s in ("calib", "test")}
    ys = {s: load_split(s)[1] for s in ("calib", "test")}
    # Only traces shapes for export; any two preprocessed images would do.
    example = torch.from_numpy(xs["calib"][:2])

    def epochs(n: int) -> int:
        return max(1, round(n * epoch_scale))

    models: dict[str, dict[str, object]] = {}
    logits: dict[str, dict[str, np.ndarray]] = {}

    def finish(name: str, model: nn.Module) -> None:
        """Fuse, export, smoke-test and measure one single-output classifier."""
        fused = fuse_model(model)
        path = out_dir / f"{name}.onnx"
        export(fused, example, path, "image", ["logits"])
        smoke_test(path, xs["test"])
        logits[name] = {s: run_onnx(path, xs[s])["logits"] for s in ("calib", "test")}
        models[name] = {
            "file": path.name,
            "params": onnx_params(path),
            "flops": count_flops(fused, example),
            "test_accuracy": accuracy(logits[name]["test"], ys["test"]),
            "calib_accuracy": accuracy(logits[name]["calib"], ys["calib"]),
        }
        print(f"{name}: {models[name]}", flush=True)

    print("training little", flush=True)
    little = train(
        LittleNet, x_train, y_train, seed=1, epochs=epochs(30), lr=4e-3,
        weight_decay=1e-4, batch=64, aug=0.7, name="little",
    )  # fmt: skip
    finish("little", little)

    print("training big", flush=True)
    big = train(
        BigNet, x_train, y_train, seed=2, epochs=epochs(40), lr=3e-3,
        weight_decay=5e-4, batch=64, aug=1.0, label_smoothing=0.05, name="big",
    )  # fmt: skip
    finish("big", big)

    for i, (description, factory) in enumerate(ENSEMBLE):
        name = f"ens{i}"
        print(f"training {name} ({description})", flush=True)
        member = train(
            factory, x_train, y_train, seed=10 + i, epochs=epochs(40), lr=3e-3,
            weight_decay=5e-4, batch=64, aug=1.0, name=name,
        )  # fmt: skip
        finish(name, member)
        models[name]["architecture"] = description
    members = [f"ens{i}" for i in range(len(ENSEMBLE))]
    avg = {s: np.mean([softmax(logits[m][s]) for m in members], axis=0) for s in ("calib", "test")}
    models["ensemble_avg"] = {
        "members": members,
        "combine": "mean of softmax",
        "test_accuracy": accuracy(avg["test"], ys["test"]),
        "calib_accuracy": accuracy(avg["calib"], ys["calib"]),
    }

    print("training the exit head (backbone frozen)", flush=True)
    exit_head = train_exit_head(big, x_train, y_train, seed=3, epochs=epochs(40))
    fused_big = fuse_model(big)
    assert isinstance(fused_big, BigNet)
    head = BigHead(fused_big, exit_head.eval()).eval()
    tail = BigTail(fused_big).eval()
    head_path, tail_path = out_dir / "big_head.onnx", out_dir / "big_tail.onnx"
    export(head, example, head_path, "image", ["act", "exit_logits", "feat"])
    with torch.no_grad():
        act_example = head(example)[0]
    export(tail, act_example, tail_path, "act", ["logits"])
    smoke_test(head_path, xs["test"])
    head_out = {s: run_onnx(head_path, xs[s]) for s in ("calib", "test")}
    smoke_test(tail_path, head_out["test"]["act"])
    # The split must reproduce big exactly: head -> tail == big on 64 test images.
    tail_logits = run_onnx(tail_path, head_out["test"]["act"][:64])["logits"]
    split_diff = float(np.abs(tail_logits - logits["big"]["test"][:64]).max())
    assert split_diff < 1e-4, f"head->tail differs from big by {split_diff}"
    models["big_head"] = {
        "file": head_path.name,
        "params": onnx_params(head_path),
        "flops": count_flops(head, example),
        "exit_test_accuracy": accuracy(head_out["test"]["exit_logits"], ys["test"]),
        "exit_calib_accuracy": accuracy(head_out["calib"]["exit_logits"], ys["calib"]),
        "act_shape": list(act_example.shape[1:]),
        "feat_dim": int(head_out["test"]["feat"].shape[1]),
        "outputs": ["act", "exit_logits", "feat"],
    }
    models["big_tail"] = {
        "file": tail_path.name,
        "params": onnx_params(tail_path),
        "flops": count_flops(tail, act_example),
        "max_abs_diff_vs_big": split_diff,
    }
    print(f"big_head: {models['big_head']}\nbig_tail: {models['big_tail']}", flush=True)

    # The zoo's contracts: big is the expensive model, the ensemble runs cheapest first.
    assert int(models["big"]["flops"]) >= 20 * int(models["little"]["flops"])  # type: ignore[call-overload]
    member_flops = [int(models[m]["flops"]) for m in members]  # type: ignore[call-overload]
    assert member_flops == sorted(member_flops), f"ensemble not cheapest first: {member_flops}"
    total_bytes = sum(p.stat().st_size for p in out_dir.glob("*.onnx"))
    assert total_bytes <= MAX_ZOO_BYTES, f"zoo is {total_bytes} bytes"
    ys_all = {"calib": ys["calib"], "test": ys["test"]}
    checks = {
        "little_big_margin_cascade": cascade_check(logits["little"], logits["big"], ys_all),
        "ensemble_margin_gates": ensemble_check(
            [logits[m] for m in members],
            member_flops,
            ys_all,
        ),
    }
    elapsed = time.perf_counter() - started
    return {
        "dataset": "mnist",
        "preprocess": {
            "input": "image",
            "dtype": "float32",
            "layout": "NCHW",
            "shape": ["N", 1, 28, 28],
            "color": "gray",
            "scale": 1.0 / 255.0,
            "mean": [MEAN],
            "std": [STD],
            "formula": "x = (pixels / 255 - mean) / std",
        },
        "labels": [str(i) for i in range(10)],
        "flops_note": FLOPS_NOTE,
        "params_note": PARAMS_NOTE,
        "models": models,
        "checks": checks,
        "onnx": {"opset": OPSET, "ir_version_max": MAX_IR_VERSION, "total_bytes": total_bytes},
        "torch_version": torch.__version__,
        "training_seconds": round(elapsed, 1),
        "trained_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None, log: Callable[[str], None] = print) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--out", type=Path, default=ZOO_DIR, help="output directory")
    parser.add_argument(
        "--epoch-scale", type=float, default=1.0,
        help="multiply every epoch count (e.g. 0.1 for a quick smoke run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    manifest = build(args.out, args.epoch_scale)
    (args.out / "zoo.json").write_text(json.dumps(manifest, indent=2) + "\n")
    log(json.dumps(manifest["checks"], indent=2))
    log(f"wrote {args.out} in {manifest['training_seconds']}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
