"""Near-chance results are flagged, folder labels can be ordered, shape mistakes name
the flag (issue 11, item 5). The demo zoo's MNIST models and real MNIST digits in
an ImageFolder whose classes are spelt out (``zero`` ... ``nine``, which sort as
``eight``, ``five``, ``four``, ...)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from jetsplit.chance import near_chance
from jetsplit.cli import main as jetsplit
from jetsplit.datasets import load_dataset
from jetsplit.demo import ZOO_DIR
from jetsplit.errors import DataError

WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
MNIST = ["--mean", "0.1307", "--std", "0.3081"]  # how the zoo's models were trained


@pytest.fixture(scope="module")
def spelt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 MNIST digits per class under sub-folders named by the digit's word."""
    root = tmp_path_factory.mktemp("spelt")
    data = load_dataset("mnist", "test")
    for c, word in enumerate(WORDS):
        (root / word).mkdir()
        for i, j in enumerate(np.flatnonzero(data.labels == c)[:40]):
            assert cv2.imwrite(str(root / word / f"{i:03d}.png"), data.images[j])
    return root


def _calibrate(out: Path, folder: Path, *extra: str) -> list[str]:
    return ["calibrate", "--out", str(out), "--data", f"folder:{folder}", "--little", str(ZOO_DIR / "little.onnx"),
            "--big", str(ZOO_DIR / "big.onnx"), *MNIST, "--json", *extra]


def test_sorted_word_labels_are_flagged_and_labels_fix_them(spelt: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert jetsplit(_calibrate(tmp_path / "wrong", spelt)) == 0
    out, err = capsys.readouterr()
    acc = json.loads(out)["calib_accuracy_full"]
    assert acc < 0.25
    assert err.splitlines()[-1] == (
        f"warning: accuracy {100 * acc:.1f}% on folder:{spelt}@calib is near chance (10.0% with 10 classes); "
        "likely causes: label order (a folder's classes sort by name: give --labels in the model's order), colour "
        "(--colour), mean/std (--mean, --std) or input size (--size) unlike the model's training")

    assert jetsplit(_calibrate(tmp_path / "right", spelt, "--labels", ",".join(WORDS))) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["calib_accuracy_full"] > 0.9 and "warning" not in err

    # The bundle now names its classes: eval and collect take the folder in its order.
    assert jetsplit(["eval", str(tmp_path / "right"), "--data", f"folder:{spelt}", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["accuracy"] > 0.9 and "warning" not in err


def test_eval_near_chance_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    # The MNIST split bundle on scikit-learn's 8x8 digits, blown up to 28x28.
    assert jetsplit(["eval", "demo:split", "--data", "digits", "--json"]) == 0
    out, err = capsys.readouterr()
    acc = json.loads(out)["accuracy"]
    assert err.splitlines()[-1] == (
        f"warning: accuracy {100 * acc:.1f}% on digits@test with bundle 'split' is near chance (10.3% with 10 "
        "classes); likely causes: label order (a folder's classes sort by name: give --labels in the model's "
        "order), or data unlike what the bundle's [input] expects (colour, mean/std, size)")


@pytest.mark.parametrize(("flags", "message"), [
    (["--colour", "rgb"], "--colour rgb: little.onnx takes 1 channel; use --colour gray"),
    (["--size", "32x32"], "--size 32x32: little.onnx takes 28x28; use --size 28x28"),
    (["--layout", "nhwc"], "--layout nhwc: little.onnx takes nchw; use --layout nchw"),
    (["--labels", "zero,one,two,three,four,five,six,seven,eight"],
     "--labels: sub-folder(s) 'nine' of '{spelt}' are not among the labels given "
     "(zero, one, two, three, four, five, six, seven, eight)"),
    (["--labels", "zero"], "--labels: expected two or more distinct class names separated by commas, got 'zero'"),
])
def test_shape_and_label_mistakes_name_the_flag(spelt: Path, tmp_path: Path, flags: list[str], message: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert jetsplit(_calibrate(tmp_path / "b", spelt, *flags)) == 2
    assert capsys.readouterr().err == f"jetsplit calibrate: error: {message.format(spelt=spelt)}\n"


def test_labels_apply_to_folders_only() -> None:
    with pytest.raises(DataError) as err:
        load_dataset("digits", "test", labels=("a", "b"))
    assert str(err.value) == "--labels: applies to folder: datasets, whose labels are sub-folder names; 'digits' has its own"


@pytest.mark.parametrize(("accuracy", "labels", "expected"), [
    (0.19, list(range(10)) * 10, "is near chance (10.0% with 10 classes)"),  # a tenth of the way to 100%
    (0.20, list(range(10)) * 10, None),
    (0.05, list(range(10)) * 10, "is below chance (10.0% with 10 classes)"),
    (0.55, [0, 1] * 50, "is near chance (50.0% with 2 classes)"),
    (0.56, [0, 1] * 50, None),
    (0.30, [0] * 90 + [1] * 10, "is below chance (90.0% with 2 classes)"),  # chance is the majority's share
    (0.0, [3] * 10, None),  # one class: no chance to speak of
])
def test_near_chance_threshold(accuracy: float, labels: list[int], expected: str | None) -> None:
    got = near_chance(accuracy, labels, "d")
    assert (got is None) if expected is None else (got is not None and expected in got)
