"""A real architecture end to end: ShuffleNet at 224x224 (the zoo's IR-3 file with
seeded weights and a 10-class last layer fitted on the digits, as a user's
fine-tuned model), calibrated by ``jetsplit calibrate --cut`` at a multi-tensor cut
(a residual unit's branch and its skip), served by a ``jetsplit cloud serve``
process and run by a ``jetsplit edge run`` process on 640x480 video frames."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from jetsplit.bundle import load_bundle
from jetsplit.calibration.graph import load_graph
from jetsplit.chain import Chain
from jetsplit.cli import main
from jetsplit.datasets import load_dataset
from jetsplit.preprocess import Preprocess
from jetsplit.tools.realzoo import build_model, fit_classifier
from tests.support.daemons import Daemon, start_worker
from tests.support.frames import digits_folder

CUT = ("r89", "r99")  # a ShuffleNet unit's branch and skip: no single tensor there is a cut
FRAMES = 40


@pytest.fixture(scope="module")
def shufflenet_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    train = load_dataset("digits", "train")
    pick = np.arange(0, len(train), 10)
    x = Preprocess(224, 224, "rgb", "nchw").batch(train.images[pick])
    return fit_classifier(build_model("shufflenet", root), x, train.labels[pick], 10, root / "shufflenet_digits.onnx")


def _video(path: Path) -> list[np.ndarray]:
    """``FRAMES`` test digits as a 640x480 MJPG clip; returns the frames as decoded."""
    data = load_dataset("digits", "test")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (640, 480))
    assert writer.isOpened()
    for img in data.images[:FRAMES]:
        writer.write(cv2.cvtColor(cv2.resize(img, (640, 480), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR))
    writer.release()
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    return frames


def test_calibrated_real_model_served_and_run_on_video(shufflenet_digits: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    folder = digits_folder(tmp_path / "labelled", 120, "train")
    out = tmp_path / "bundle"
    assert main(["calibrate", "--out", str(out), "--data", f"folder:{folder}", "--model", str(shufflenet_digits),
                 "--cut", ",".join(CUT)]) == 0
    capsys.readouterr()
    bundle = load_bundle(out)
    head, tail = bundle.stages
    assert head.carry is not None and tail.scores_kind == "probs"  # the zoo's Softmax: never softmaxed twice
    infos = load_graph(shufflenet_digits).tensors
    packed_bytes = sum(infos[n].elements or 0 for n in CUT) * 2  # f16 on the wire

    frames = _video(tmp_path / "clip.avi")
    assert len(frames) == FRAMES and frames[0].shape == (480, 640, 3)
    with Chain.open(bundle) as chain:
        x = chain.preprocess(frames)
        exit_out, tail_out = chain.run_all(x)
    # What the agent must answer: the exit's class where its gate accepts, else the tail's.
    want = np.where(exit_out.accept, exit_out.pred, tail_out.pred)
    offloaded = int((~exit_out.accept).sum())
    assert offloaded >= 2, "the gate offloads nothing on these frames: the test would not reach the worker"

    endpoint = f"ipc://{tmp_path}/worker.sock"
    results = tmp_path / "results.jsonl"
    worker, _ = start_worker(str(out), bind=endpoint)
    try:
        edge = Daemon("edge", "run", "--bundle", str(out), "--cloud", endpoint, "--source", f"file://{tmp_path / 'clip.avi'}",
                      "--sink", f"jsonl:{results}", "--deadline-ms", "5000")
        assert edge.proc.wait(180) == 0
    finally:
        worker.stop()
    lines = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    assert sorted(r["frame"] for r in lines) == list(range(FRAMES))
    by_frame = {r["frame"]: r for r in lines}
    cloud = [r for r in lines if r["where"] == "cloud"]
    assert len(cloud) == offloaded and not [r for r in lines if r["where"] == "fallback"]
    # The packed cut travels as one tensor: its bytes are the sum of the two tensors'.
    assert all(packed_bytes <= r["bytes_up"] <= packed_bytes + 2048 for r in cloud), (packed_bytes, cloud[0])
    got = np.array([by_frame[i]["class_id"] for i in range(FRAMES)])
    np.testing.assert_array_equal(got, want)
