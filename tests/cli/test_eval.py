"""``jetsplit eval``: the JSON contract, and bad input as one line with no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jetsplit.cli import main

JETSPLIT = [str(Path(sys.executable).with_name("jetsplit"))]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([*JETSPLIT, *args], capture_output=True, text=True, timeout=120, env=env)


def test_eval_json_contract(make_bundle, capsys: pytest.CaptureFixture[str]) -> None:
    b = make_bundle("ensemble")
    assert main(["eval", str(b.root), "--data", "digits", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert isinstance(r["n"], int) and r["n"] == 360
    for key in ("accuracy", "mean_time_ms", "accuracy_full", "time_full_ms"):
        assert isinstance(r[key], float)
    assert [s["name"] for s in r["stages"]] == ["m0", "m1", "m2"]
    assert sum(s["exit_fraction"] for s in r["stages"]) == pytest.approx(1.0)
    for s in r["stages"]:
        assert {"name", "exit_fraction", "accuracy_alone", "time_ms"} <= set(s)
    # Early exit costs less than running everything.
    assert r["mean_time_ms"] < r["time_full_ms"] and r["mean_flops"] < r["flops_full"]
    assert 0 < r["offload_fraction"] < 1


def test_eval_table(make_bundle, capsys: pytest.CaptureFixture[str]) -> None:
    b = make_bundle("split")
    assert main(["eval", str(b.root), "--data", "digits", "--split", "calib"]) == 0
    out = capsys.readouterr().out
    assert "tiny-split" in out and "head:" in out and "per stage alone" in out


def _one_line_error(proc: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern in lines[0], lines[0]


def test_missing_bundle(tmp_path: Path) -> None:
    _one_line_error(run_cli("eval", str(tmp_path / "nope"), "--data", "digits"), "no such directory")


def test_changed_model(make_bundle) -> None:
    b = make_bundle("little-big")
    with open(b.root / "linear.onnx", "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x01\x02")
    _one_line_error(run_cli("eval", str(b.root), "--data", "digits"), "file 'linear.onnx' changed after hashing")


def test_frame_of_wrong_dtype(make_bundle, tmp_path: Path) -> None:
    b = make_bundle("little-big")
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 8, 8), np.float32), y=np.zeros(5, np.int64))
    _one_line_error(run_cli("eval", str(b.root), "--data", f"npz:{tmp_path / 'd.npz'}", "--split", "all"),
                    "x must be uint8")


def test_frame_of_wrong_shape(make_bundle, tmp_path: Path) -> None:
    b = make_bundle("little-big")
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 8, 8, 2), np.uint8), y=np.zeros(5, np.int64))
    _one_line_error(run_cli("eval", str(b.root), "--data", f"npz:{tmp_path / 'd.npz'}", "--split", "all"),
                    "frame: expected shape HxW or HxWxC with C in 1, 3, 4, got (8, 8, 2)")


def test_unknown_command() -> None:
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and "unknown command 'frobnicate'" in proc.stderr


def test_folder_with_other_classes_than_the_bundle(make_bundle, tmp_path: Path) -> None:
    """Two class folders named unlike a ten-class bundle's labels: read as its
    classes 0 and 1 that would be a wrong accuracy, so it is one clear line."""
    import cv2

    b = make_bundle("little-big")
    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / name / "0.png"), np.zeros((8, 8), np.uint8))
    _one_line_error(run_cli("eval", str(b.root), "--data", f"folder:{tmp_path / 'data'}", "--split", "all"),
                    "has 2 classes (cat, dog), bundle 'tiny-little-big' has 10; name its sub-folders after")
