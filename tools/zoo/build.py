"""The zoo's pipeline: train, export, measure, check, write ``zoo.json``.

``python -m jetsplit.tools.zoo`` (``make zoo``) trains everything on CPU with fixed
seeds on the ``train`` split only and writes the ONNX files and ``zoo.json`` into
the package's demo zoo (``jetsplit/demo/zoo``), from which ``make bundles`` builds
the demo bundles.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from jetsplit.calibration.exits import MAX_IR_VERSION
from jetsplit.demo import ZOO_DIR
from jetsplit.gates import softmax
from jetsplit.tools.zoo.checks import accuracy, cascade_check, ensemble_check
from jetsplit.tools.zoo.data import MEAN, STD, load_split
from jetsplit.tools.zoo.export import OPSET, PARAMS_NOTE, export, onnx_params, run_onnx, smoke_test
from jetsplit.tools.zoo.flops import FLOPS_NOTE, count_flops
from jetsplit.tools.zoo.models import ENSEMBLE, BigHead, BigNet, BigTail, LittleNet, fuse_model
from jetsplit.tools.zoo.training import train, train_exit_head

__all__ = ["build", "main"]

MAX_ZOO_BYTES = 10 * 1024 * 1024


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
    parser = argparse.ArgumentParser(description="Train the demo zoo on MNIST and export it as ONNX.")
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
