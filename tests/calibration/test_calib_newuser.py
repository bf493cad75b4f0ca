"""End to end as a new user: their own ImageFolder, their own ONNX big and little
models with arbitrary tensor names, then calibrate -> collect -> tune -> eval
through the CLI with no hand editing.

The photos are crops of scikit-image's bundled pictures (one class per picture,
with flips, brightness jitter and noise); the models are fitted here with numpy
and scikit-learn and written with onnx.helper (no torch at test time):

- big: ``photo_in`` -> conv/relu ``stem/relu:0`` -> conv/relu ``deep.act`` -> pool
  -> linear ``class_scores/logits``;
- little: ``photo_in`` -> 8x8 average pool -> linear -> Softmax ``probabilities``
  (so its scores are probabilities, not logits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from jetsplit.cli import main as jetsplit
from jetsplit.datasets import load_dataset
from jetsplit.preprocess import Preprocess

CLASSES = ("astronaut", "chelsea", "coffee", "rocket")
PER_CLASS = 60
SIDE = 32


def make_folder(root: Path) -> Path:
    import cv2
    from skimage import data as skdata

    rng = np.random.default_rng(7)
    for name in CLASSES:
        photo = getattr(skdata, name)()
        photo = cv2.resize(photo, (160, int(160 * photo.shape[0] / photo.shape[1])), interpolation=cv2.INTER_AREA)
        (root / name).mkdir(parents=True)
        for i in range(PER_CLASS):
            y = rng.integers(0, photo.shape[0] - 48)
            x = rng.integers(0, photo.shape[1] - 48)
            crop = photo[y : y + 48, x : x + 48].astype(np.float32)
            if rng.random() < 0.5:
                crop = crop[:, ::-1]
            crop = crop * rng.uniform(0.6, 1.4) + rng.normal(0, 18, crop.shape)
            bgr = cv2.cvtColor(np.clip(crop, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)
            cv2.imwrite(str(root / name / f"img_{i:03d}.png"), bgr)
    return root


def _save(nodes: list, inits: list, outputs: list, path: Path) -> Path:
    graph = helper.make_graph(nodes, path.stem, [helper.make_tensor_value_info("photo_in", TensorProto.FLOAT, ["n", 3, SIDE, SIDE])],
                              outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _fit(feats: np.ndarray, labels: np.ndarray, c: float) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    clf = LogisticRegression(C=c, max_iter=2000).fit(feats, labels)
    return clf.coef_.astype(np.float32), clf.intercept_.astype(np.float32)


def make_models(folder: Path, out: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    train = load_dataset(f"folder:{folder}", "train")
    x = Preprocess(SIDE, SIDE, colour="rgb", layout="nchw").batch(train.images)
    w1 = numpy_helper.from_array((rng.normal(0, 0.3, (12, 3, 5, 5))).astype(np.float32), "stem.w")
    w2 = numpy_helper.from_array((rng.normal(0, 0.25, (16, 12, 3, 3))).astype(np.float32), "deep.w")
    body = [
        helper.make_node("Conv", ["photo_in", "stem.w"], ["stem/conv:0"], strides=[2, 2], pads=[2, 2, 2, 2]),
        helper.make_node("Relu", ["stem/conv:0"], ["stem/relu:0"]),
        helper.make_node("Conv", ["stem/relu:0", "deep.w"], ["deep.conv"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["deep.conv"], ["deep.act"]),
        helper.make_node("GlobalAveragePool", ["deep.act"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["pooled"]),
    ]
    feats_path = _save(body, [w1, w2], [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["n", 16])], out / "feats.onnx")
    feats = ort.InferenceSession(str(feats_path)).run(None, {"photo_in": x})[0]
    mu, sd = feats.mean(0), feats.std(0) + 1e-6
    w, b = _fit((feats - mu) / sd, train.labels, 1.0)
    w, b = w / sd, b - (w / sd) @ mu
    head = [numpy_helper.from_array(w.astype(np.float32), "fc.w"), numpy_helper.from_array(b.astype(np.float32), "fc.b")]
    big = _save(body + [helper.make_node("Gemm", ["pooled", "fc.w", "fc.b"], ["class_scores/logits"], transB=1)],
                [w1, w2, *head], [helper.make_tensor_value_info("class_scores/logits", TensorProto.FLOAT, ["n", len(CLASSES)])],
                out / "my_big.onnx")
    small = x.reshape(len(x), 3, 4, 8, 4, 8).mean(axis=(3, 5)).reshape(len(x), -1)
    wl, bl = _fit(small, train.labels, 0.05)
    little_nodes = [
        helper.make_node("AveragePool", ["photo_in"], ["tiny"], kernel_shape=[8, 8], strides=[8, 8]),
        helper.make_node("Flatten", ["tiny"], ["tiny_flat"]),
        helper.make_node("Gemm", ["tiny_flat", "lin.w", "lin.b"], ["lin.out"], transB=1),
        helper.make_node("Softmax", ["lin.out"], ["probabilities"], axis=1),
    ]
    little = _save(little_nodes, [numpy_helper.from_array(wl, "lin.w"), numpy_helper.from_array(bl, "lin.b")],
                   [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", len(CLASSES)])], out / "my_little.onnx")
    return {"big": big, "little": little}


@pytest.fixture(scope="module")
def user(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("newuser")
    folder = make_folder(root / "photos")
    return {"root": root, "folder": folder, **make_models(folder, root)}


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = jetsplit(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_little_big_calibrate_collect_tune_eval(user: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root, data = user["root"], f"folder:{user['folder']}"
    bundle = root / "lb"
    _run(["calibrate", "--out", str(bundle), "--data", data, "--little", str(user["little"]),
          "--big", str(user["big"])], capsys)
    manifest = (bundle / "bundle.toml").read_text()
    assert 'scores = "probabilities"' in manifest and 'scores_kind = "probs"' in manifest
    for split in ("calib", "test"):
        _run(["collect", str(bundle), "--data", data, "--split", split, "--out", str(root / f"{split}.npz")], capsys)
    tuned = root / "lb-tuned"
    _run(["tune", str(root / "calib.npz"), "--test", str(root / "test.npz"), "--out", str(tuned),
          "--objective", "seed", "--alpha", "0.5", "--plots", str(root / "plots"),
          "--summary", str(root / "tune.json")], capsys)
    summary = json.loads((root / "tune.json").read_text())
    assert {p.name for p in (root / "plots").iterdir()} >= {"margins.png", "tradeoffs.png"}
    # The tuned bundle is one of its own, and its [meta] holds only the tuned figures.
    from jetsplit.bundle import load_bundle

    source, out = load_bundle(bundle), load_bundle(tuned)
    assert out.name == "lb-tuned" and out.fingerprint != source.fingerprint
    assert out.description.endswith("; thresholds re-tuned by jetsplit tune (seed, cost time) from bundle 'lb'")
    meta = out.extra
    assert meta["thresholds"] == [t for t in summary["thresholds"] if t is not None] == list(out.thresholds()[:1])
    assert meta["calib_offload"] == summary["calib"]["offload"]
    assert meta["calib_exit_fraction"] == summary["calib"]["exit_fraction"]
    assert meta["calib_accuracy"] == summary["calib"]["accuracy"] and meta["objective"] == "seed"
    assert meta["reported_on"].endswith("@test") and meta["reported_offload"] == summary["test"]["offload"]
    assert meta["stage_accuracy_alone"] == source.extra["stage_accuracy_alone"]  # the models' own: kept
    result = json.loads(_run(["eval", str(tuned), "--data", data, "--split", "test", "--json"], capsys))
    held = summary["test"]
    assert abs(result["accuracy"] - held["accuracy"]) <= 0.01
    assert abs(result["offload_fraction"] - held["offload"]) <= 0.01
    # The full chain is much better than the little model alone here, so tuning matters.
    assert summary["test"]["accuracy_full"] > summary["test"]["stage_accuracy_alone"][0]
    report = root / "report.md"
    _run(["report", str(tuned), "--trace", str(root / "test.npz"), "--out", str(report)], capsys)
    assert "Pareto" in report.read_text()


@pytest.mark.parametrize("gate", ["dgate", "support"])
def test_split_with_learned_gate_in_graph(user: dict[str, Path], capsys: pytest.CaptureFixture[str], gate: str) -> None:
    from jetsplit.bundle import load_bundle
    from jetsplit.chain import Chain

    root, data = user["root"], f"folder:{user['folder']}"
    out = root / f"split-{gate}"
    _run(["calibrate", "--out", str(out), "--data", data, "--model", str(user["big"]), "--cut", "stem/relu:0",
          "--gate", gate, "--max-accuracy-drop", "2"], capsys)
    bundle = load_bundle(out)
    head = bundle.stages[0]
    assert head.carry == "stem/relu:0" and head.gate is not None and head.gate.kind == gate
    frames = load_dataset(data, "test").images
    with Chain.open(bundle) as chain:
        x = chain.preprocess(frames)
        st = chain.stage(0)
        outs = st.engine.infer({st.input_name: x})
        numpy_score = st.run(x, None).score
    np.testing.assert_allclose(outs["gate_score"], numpy_score, atol=1e-5)
