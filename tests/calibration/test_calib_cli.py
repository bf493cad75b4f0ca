"""`jetsplit profile` and `jetsplit split` through the real dispatcher."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jetsplit.cli import main

_JETSPLIT = Path(sys.executable).with_name("jetsplit")


def test_profile_prints_the_table(residual_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "profile",
                str(residual_model),
                "--runs",
                "3",
                "--bandwidth-mbps",
                "50",
                "--cloud-speedup",
                "8",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "link 50 Mbit/s, cloud 8x faster" in out
    for column in ("cut", "shape", "fp32", "f16", "i8", "edge ms", "share", "total ms"):
        assert column in out
    assert "b1_out" in out and "b1_relu1" not in out
    assert "(all on cloud)" in out and "(all on edge)" in out
    assert "recommended:" in out


def test_profile_json(chain_model: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", str(chain_model), "--runs", "3", "--json", "--wire", "i8"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["link"]["wire"] == "i8"
    labels = [o["label"] for o in data["options"]]
    assert labels[1:-1] == ["c0", "r0", "c1", "r1", "c2", "r2", "pool", "flat"]
    assert data["recommended"]["label"] in labels


def test_split_writes_and_verifies(
    residual_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "split"
    code = main(
        ["split", str(residual_model), "--at", "b1_relu1", "--at", "b0_out", "--out", str(out_dir)]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert (out_dir / "residual.head.onnx").is_file() and (out_dir / "residual.tail.onnx").is_file()
    assert "verified on 4 images from scikit-image photographs: max abs diff" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["split", "{model}", "--at", "relu9", "--out", "{tmp}"],
            "no tensor named 'relu9'; nearest: ",
        ),
        (["split", "{model}", "--at", "b1_relu1", "--out", "{tmp}"], "'b1_relu1' is not a cut"),
        (["split", "{tmp}/absent.onnx", "--at", "a", "--out", "{tmp}"], "no such file"),
        (["profile", "{model}", "--bandwidth-mbps", "0"], "bandwidth: expected > 0"),
        (["profile", "{model}", "--data", "bogus"], "dataset spec 'bogus'"),
    ],
)
def test_user_errors_are_one_line(
    residual_model: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    message: str,
) -> None:
    argv = [a.format(model=residual_model, tmp=tmp_path) for a in args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_console_script(chain_model: Path, tmp_path: Path) -> None:
    assert _JETSPLIT.is_file(), "the jetsplit console script is not installed in this environment"
    profile = subprocess.run(
        [str(_JETSPLIT), "profile", str(chain_model), "--runs", "3"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert profile.returncode == 0, profile.stderr
    assert "recommended:" in profile.stdout and "r1" in profile.stdout
    bad = subprocess.run(
        [str(_JETSPLIT), "split", str(chain_model), "--at", "nope", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("jetsplit split: error: chain.onnx: no tensor named 'nope'")
