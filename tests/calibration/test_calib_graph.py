"""Cut points: articulation tensors only, user cuts validated with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from jetsplit.calibration.graph import candidate_cuts, check_cut, load_graph
from jetsplit.calibration.split import split_model, verify_split
from jetsplit.errors import ConfigError, EngineError

# Tensors inside the residual model's first block branch, and that block's output.
RESIDUAL_BRANCH = ("b1_conv1", "b1_relu1", "b1_conv2")
RESIDUAL_BLOCK_OUT = "b1_out"


def test_chain_every_intermediate_is_a_cut(chain_model: Path) -> None:
    graph = load_graph(chain_model)
    names = [c.tensor for c in candidate_cuts(graph)]
    assert names == ["c0", "r0", "c1", "r1", "c2", "r2", "pool", "flat"]


def test_residual_cuts_exclude_the_branch(residual_model: Path) -> None:
    names = [c.tensor for c in candidate_cuts(load_graph(residual_model))]
    assert RESIDUAL_BLOCK_OUT in names and "b1_sum" in names and "b0_out" in names
    for blk in (1, 2):
        for inside in (f"b{blk}_conv1", f"b{blk}_relu1", f"b{blk}_conv2"):
            assert inside not in names
    assert not set(RESIDUAL_BRANCH) & set(names)


def test_shapes_are_per_sample(chain_model: Path, residual_model: Path) -> None:
    # The chain's batch axis is dynamic ("N"), the residual model's is fixed: both count per sample.
    chain = {c.tensor: c for c in candidate_cuts(load_graph(chain_model))}
    assert chain["r1"].infos[0].shape == (1, 16, 16, 16)
    assert chain["r1"].elements == 16 * 16 * 16
    assert chain["r1"].wire_bytes("fp32") == 4 * 4096
    assert chain["r1"].wire_bytes("f16") == 2 * 4096
    assert chain["r1"].wire_bytes("i8") == 4096
    res = {c.tensor: c for c in candidate_cuts(load_graph(residual_model))}
    assert res["b1_out"].infos[0].shape == (1, 8, 28, 28)


def test_every_candidate_passes_the_cut_check(chain_model: Path, residual_model: Path) -> None:
    for model in (chain_model, residual_model):
        graph = load_graph(model)
        for cut in candidate_cuts(graph):
            assert check_cut(graph, cut.tensors).tensors == cut.tensors


def test_multi_tensor_cut_inside_a_block(residual_model: Path) -> None:
    graph = load_graph(residual_model)
    cut = check_cut(graph, ["b1_relu1", "b0_out"])
    assert cut.tensors == ("b1_relu1", "b0_out")
    assert cut.elements == 2 * 8 * 28 * 28


@pytest.mark.parametrize(
    ("tensors", "message"),
    [
        (["nope"], r"no tensor named 'nope'; candidate cuts: stem_c, b0_out, b1_sum"),
        (["b1_relu1"], r"'b1_relu1' is not a cut: output 'logits'"),
        (["b1_conv2"], r"not a cut"),
        (["x"], r"'x' is a graph input"),
        (["b1_c1_w"], r"does not depend on the graph inputs"),
        ([], r"at least one tensor"),
    ],
)
def test_bad_cuts(residual_model: Path, tensors: list[str], message: str) -> None:
    graph = load_graph(residual_model)
    with pytest.raises(ConfigError, match=message):
        check_cut(graph, tensors)


def test_missing_or_broken_model(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="no such file"):
        load_graph(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not a model\xff" * 10)
    with pytest.raises(EngineError):
        load_graph(junk)


def test_a_second_input_can_ride_along(tmp_path: Path) -> None:
    # y = relu(conv(x)) + z: the tail reads z, so {r, z} is a cut though z is an input.
    w = numpy_helper.from_array(np.full((2, 2, 1, 1), 0.5, np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["c"]),
            helper.make_node("Relu", ["c"], ["r"]),
            helper.make_node("Add", ["r", "z"], ["y"]),
        ],
        "two_inputs",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 4, 4]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 2, 4, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 4, 4])],
        initializer=[w],
    )
    path = tmp_path / "two.onnx"
    onnx.save(
        helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=10),
        str(path),
    )
    loaded = load_graph(path)
    assert candidate_cuts(loaded) == []  # z stays alive to the end: no single-tensor cut
    with pytest.raises(ConfigError, match="is not a cut"):
        check_cut(loaded, ["r"])
    result = split_model(path, ["r", "z"], tmp_path / "out")
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal((3, 2, 4, 4)).astype(np.float32) for n in ("x", "z")}
    assert verify_split(path, result, feeds).max_abs_diff <= 1e-4
