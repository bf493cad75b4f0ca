"""The model zoo's classics at 224x224, as users bring them: cut, checked, bundled.

The models come from the onnx wheel's light copies with seeded weights
(:mod:`jetsplit.tools.realzoo`), built once per session. The large ones
(ResNet-50 at 100 MB in both forms, DenseNet-121) run under ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from jetsplit.bundle import load_bundle, write_bundle
from jetsplit.calibration.graph import candidate_cuts, load_graph
from jetsplit.calibration.split import real_inputs, split_model, verify_split
from jetsplit.cli import main
from jetsplit.engines import open_engine
from jetsplit.errors import BundleError
from jetsplit.tools.realzoo import build_model

SLOW = pytest.mark.slow


@pytest.fixture(scope="session")
def real_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("realzoo")


# Cuts at about a quarter, a half and three quarters of each model's candidates,
# plus the multi-tensor cuts around a branched block (its branch and its skip, or an
# Inception module's four branches).
@pytest.mark.parametrize(
    ("name", "multi"),
    [
        ("squeezenet", None),
        ("squeezenet_opset17", None),
        ("shufflenet", ("r89", "r99")),
        pytest.param("inception_v2", ("r161", "r168", "r182", "r183"), marks=SLOW),
        pytest.param("densenet121", None, marks=SLOW),
        pytest.param("resnet50", None, marks=SLOW),
        pytest.param("resnet50_opset17", None, marks=SLOW),
        pytest.param("inception_v2_opset17", None, marks=SLOW),
        pytest.param("shufflenet_opset17", None, marks=SLOW),
    ],
)
def test_head_then_tail_equals_the_whole_model(real_zoo: Path, tmp_path: Path, name: str,
                                               multi: tuple[str, ...] | None) -> None:
    path = build_model(name, real_zoo)
    graph = load_graph(path)
    cuts = candidate_cuts(graph)
    assert len(cuts) >= 20, [c.tensor for c in cuts]
    picks = [cuts[len(cuts) // 4].tensors, cuts[len(cuts) // 2].tensors, cuts[3 * len(cuts) // 4].tensors]
    if multi:
        picks.append(multi)
    inputs = real_inputs(graph, count=3)  # three photographs, run as one batch of 3
    for i, cut in enumerate(picks):
        res = split_model(path, cut, tmp_path / str(i))
        # A batch of 1 written into a Reshape is made polymorphic, never kept.
        assert res.batch_one == ()
        check = verify_split(path, res, inputs)
        assert check.max_abs_diff <= 1e-4 and check.samples == 3
        with open_engine(res.tail_path) as tail:
            assert all(spec.shape[0] is None for spec in tail.inputs)
        if graph.external:  # written as it came: weights beside the graph
            assert Path(f"{res.head_path}.data").is_file() and Path(f"{res.tail_path}.data").is_file()


def test_zoo_files_are_what_users_bring(real_zoo: Path) -> None:
    old = onnx.load(str(build_model("shufflenet", real_zoo)), load_external_data=False)
    inits = {t.name for t in old.graph.initializer}
    assert old.ir_version == 3 and inits <= {v.name for v in old.graph.input}
    reshapes = [n for n in old.graph.node if n.op_type == "Reshape"]
    assert reshapes and all(numpy_helper.to_array(t)[0] == 1 for t in old.graph.initializer
                            if t.name in {n.input[1] for n in reshapes})
    new_path = build_model("squeezenet_opset17", real_zoo)
    new = onnx.load(str(new_path), load_external_data=False)
    assert new.ir_version == 8 and new.opset_import[0].version == 17
    assert Path(f"{new_path}.data").stat().st_size > 4_000_000


def test_a_batch_pinned_unprovably_runs_that_piece_at_batch_one(tmp_path: Path) -> None:
    # Conv -> Reshape to a shape computed by Concat([1], [-1]) -> Gemm: the head is
    # free to batch, the tail's Reshape cannot be proven safe, so the tail keeps a
    # batch of 1 and still gives every sample its own answer.
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (4, 3, 3, 3)).astype(np.float32), "w"),
        numpy_helper.from_array(np.asarray([1], np.int64), "one"),
        numpy_helper.from_array(np.asarray([-1], np.int64), "rest"),
        numpy_helper.from_array(rng.normal(0, 0.1, (5, 4 * 30 * 30)).astype(np.float32), "fc"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("Concat", ["one", "rest"], ["shape"], axis=0),
        helper.make_node("Reshape", ["r", "shape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1),
    ]
    graph = helper.make_graph(nodes, "pinned", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    path = tmp_path / "pinned.onnx"
    onnx.save(model, str(path))
    res = split_model(path, ["r"], tmp_path / "out")
    assert res.batch_one == ("tail",)
    inputs = real_inputs(path, count=4)
    assert verify_split(path, res, inputs).max_abs_diff <= 1e-5
    with open_engine(res.tail_path) as tail, open_engine(res.head_path) as head:
        assert tail.batch_one and not head.batch_one
        batch = head.infer(inputs)["r"]
        together = tail.infer({"r": batch})["y"]
        alone = np.concatenate([tail.infer({"r": batch[i : i + 1]})["y"] for i in range(4)])
        np.testing.assert_array_equal(together, alone)
        assert len({tuple(row.round(4)) for row in together}) == 4  # four answers, not one


def test_bundle_hashes_external_data(real_zoo: Path, tmp_path: Path) -> None:
    path = build_model("squeezenet_opset17", real_zoo)
    res = split_model(path, ["r32"], tmp_path / "split")
    manifest = {
        "schema": 1, "name": "sq", "input": {"height": 224, "width": 224},
        "labels": {"names": [str(i) for i in range(1000)]},
        "stage": [
            {"name": "head", "model": "head.onnx", "where": "edge", "input": "frame", "scores": "r32",
             "carry": "r32", "gate": {"kind": "margin", "threshold": 2.0}},
            {"name": "tail", "model": "tail.onnx", "where": "cloud", "input": "carry",
             "scores": "softmaxout_1", "scores_kind": "probs"},
        ],
    }
    bundle = write_bundle(tmp_path / "b", manifest, {"head.onnx": res.head_path, "tail.onnx": res.tail_path})
    data = {f"{res.head_path.name}.data", f"{res.tail_path.name}.data"}
    assert data <= set(bundle.files)
    with open((tmp_path / "b" / f"{res.tail_path.name}.data"), "r+b") as fh:
        fh.seek(100)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(BundleError, match=r"\.tail\.onnx\.data' changed after hashing"):
        load_bundle(tmp_path / "b")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["split", "{bad}", "--at", "r1", "--out", "{tmp}/o"], "not an ONNX model"),
        (["split", "{sq}", "--at", "r3x", "--out", "{tmp}/o"], "no tensor named 'r3x'; nearest: r3"),
        (["split", "{inc}", "--at", "r168", "--out", "{tmp}/o"], "'r168' is not a cut"),
        (["split", "{missing}", "--at", "r1", "--out", "{tmp}/o"], "external data file 'squeezenet_opset17.onnx.data'"),
        (["profile", "{missing}"], "which is not beside it"),
        (["calibrate", "--out", "{tmp}/b", "--data", "digits", "--model", "{sq}", "--cut", "r1,r2x"],
         "no tensor named 'r2x'"),
    ],
)
def test_bad_models_and_cuts_are_one_line(real_zoo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          argv: list[str], message: str) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a model\n")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    missing = lonely / "squeezenet_opset17.onnx"
    missing.write_bytes(build_model("squeezenet_opset17", real_zoo).read_bytes())  # no .data beside it
    names = {"bad": bad, "sq": build_model("squeezenet", real_zoo), "inc": build_model("inception_v2", real_zoo),
             "missing": missing, "tmp": tmp_path}
    assert main([a.format(**names) for a in argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_profile_at_scale_from_one_profiled_run(real_zoo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = build_model("squeezenet", real_zoo)
    assert main(["profile", str(path), "--runs", "3", "--wire", "i8+zstd", "--bandwidth-mbps", "20"]) == 0
    out = capsys.readouterr().out
    assert "'sent' measured on real activations" in out and "check, heads timed in sessions of their own" in out
    assert "at the recommended cut" in out and "i8+zstd" in out
    assert main(["profile", str(path), "--runs", "3", "--wire", "i8+zstd", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    cuts = [o for o in data["options"] if o["tensors"] and o["label"] not in ("(all on cloud)", "(all on edge)")]
    # Shares rise through the order (one profiled run, summed over each head's nodes).
    shares = [o["share"] for o in cuts]
    assert shares == sorted(shares) and 0 < shares[0] < shares[-1] <= 1.0
    # Post-ReLU activations entropy-code below their i8 size; the bytes are measured.
    assert data["wire_bytes_measured"] and all(o["send_bytes"] < o["bytes"]["i8"] for o in cuts)
    assert len(data["heads_timed_alone_ms"]) == 3


def test_an_nhwc_input_is_cut_and_checked_as_it_comes(real_zoo: Path, tmp_path: Path) -> None:
    # SqueezeNet as a TensorFlow-style export: the image comes in NHWC and a
    # Transpose makes it NCHW inside the graph.
    model = onnx.load(str(build_model("squeezenet", real_zoo)))
    inits = {t.name for t in model.graph.initializer}
    data = next(v for v in model.graph.input if v.name not in inits)  # IR 3 lists weights first
    nchw_name = data.name
    data.name = "image_nhwc"
    dims = data.type.tensor_type.shape.dim
    sides = [d.dim_value for d in dims]
    for d, v in zip(dims, [sides[0], sides[2], sides[3], sides[1]]):
        d.dim_value = v
    model.graph.node.insert(0, helper.make_node("Transpose", ["image_nhwc"], [nchw_name], perm=[0, 3, 1, 2]))
    path = tmp_path / "squeezenet_nhwc.onnx"
    onnx.save(model, str(path))
    inputs = real_inputs(path, count=3)
    assert inputs["image_nhwc"].shape == (3, 224, 224, 3)
    res = split_model(path, ["r32"], tmp_path / "out")
    assert verify_split(path, res, inputs).max_abs_diff <= 1e-4
    from jetsplit.calibration.builder import input_defaults

    assert input_defaults(path)["layout"] == "nhwc"


def test_several_outputs_need_scores_named(real_zoo: Path, tmp_path: Path) -> None:
    from jetsplit.calibration.builder import scores_output
    from jetsplit.errors import ConfigError

    model = onnx.load(str(build_model("squeezenet_opset17", real_zoo)))
    model.graph.output.append(helper.make_tensor_value_info("r64", TensorProto.FLOAT, None))  # a feature map too
    path = tmp_path / "two_outputs.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="two_outputs.onnx.data")
    with pytest.raises(ConfigError, match="name one with --scores"):
        scores_output(path)
    with pytest.raises(ConfigError, match="--scores 'softmax': no such output"):
        scores_output(path, "softmax")
    # The version converter wraps the zoo's Softmax in shape nodes: still probabilities.
    assert scores_output(path, "softmaxout_1") == ("softmaxout_1", "probs")


def _photo_set(path: Path, classes: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """scikit-image's photographs at 224x224, each also flipped and shifted (32
    images), labelled with two of ``classes`` names: an npz dataset a user would make
    (BGR, as datasets hold images). Returns the images in RGB, and the labels."""
    import cv2
    import skimage.data

    names = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "cat", "hubble_deep_field")
    images, labels = [], []
    for k, name in enumerate(names):
        img = getattr(skimage.data, name)()
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB) if img.ndim == 2 else img[:, :, :3]
        img = cv2.resize(img, (224, 224), interpolation=cv2.INTER_AREA)
        for view in (img, img[:, ::-1]):
            for shift in (0, 8):
                images.append(np.roll(view, shift, axis=0))
                labels.append(7 * (k % 2))
    x, y = np.stack(images).astype(np.uint8), np.asarray(labels)
    np.savez(path, x=np.ascontiguousarray(x[..., ::-1]), y=y, labels=np.asarray([f"c{i}" for i in range(classes)]))
    return x, y


def _own_probs(path: Path, x: np.ndarray) -> np.ndarray:
    """The model's own answer, one sample at a time (the zoo's files pin a batch of 1)."""
    from jetsplit.calibration.builder import scores_output

    out, kind = scores_output(path)
    assert kind == "probs"  # the zoo's classics end in a Softmax
    with open_engine(path) as engine:
        name = engine.inputs[0].name
        return np.concatenate([engine.infer({name: x[i : i + 1]})[out].reshape(1, -1) for i in range(len(x))])


@pytest.mark.parametrize(
    ("mode", "little", "big"),
    [
        ("little-big", "squeezenet", "shufflenet"),
        ("ensemble", "squeezenet", "shufflenet"),
        pytest.param("little-big", "squeezenet", "resnet50_opset17", marks=SLOW),
    ],
)
def test_little_big_and_ensemble_of_real_architectures(real_zoo: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str],
                                                       mode: str, little: str, big: str) -> None:
    from jetsplit.chain import Chain
    from jetsplit.gates import margin_score

    images, _ = _photo_set(tmp_path / "photos.npz")
    data = f"npz:{tmp_path / 'photos.npz'}"
    paths = [build_model(little, real_zoo), build_model(big, real_zoo)]
    models = ["--little", str(paths[0]), "--big", str(paths[1])] if mode == "little-big" else \
        ["--ensemble", *map(str, paths)]
    out = tmp_path / "bundle"
    assert main(["calibrate", "--out", str(out), "--data", data, *models]) == 0
    bundle = load_bundle(out)  # hashes checked, external data included
    assert f'mode = "{mode}"' in (out / "bundle.toml").read_text() and len(bundle.stages) == 2
    capsys.readouterr()
    assert main(["eval", str(out), "--data", data, "--split", "all", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == len(images) and len(report["stages"]) == 2
    # The chain answers what the models themselves answer: the little (first) model
    # where its gate accepts, the big one (or the members' mean) where it does not.
    x = images.astype(np.float32).transpose(0, 3, 1, 2) / 255.0  # the bundle's defaults
    own = [_own_probs(p, x) for p in paths]
    with Chain.open(bundle) as chain:
        batch = chain.preprocess([img[..., ::-1] for img in images])
        np.testing.assert_allclose(batch, x, atol=1e-6)
        threshold = float(np.median(margin_score(own[0])))  # half the photographs go on
        res = chain.run_from(0, batch, thresholds=[threshold, None])
    first = res.stage == 0
    np.testing.assert_array_equal(first, margin_score(own[0]) >= threshold)
    assert 0 < first.sum() < len(images)
    final = own[1] if mode == "little-big" else (own[0] + own[1]) / 2
    expect = np.where(first[:, None], own[0], final)
    np.testing.assert_allclose(res.probs, expect, atol=1e-5)
    np.testing.assert_array_equal(res.pred, expect.argmax(axis=1))
