"""Head then tail equals the full model, on real images, at every kind of cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from jetsplit.calibration.graph import candidate_cuts, load_graph
from jetsplit.calibration.split import real_inputs, split_model, verify_split
from jetsplit.engines import open_engine
from jetsplit.errors import ConfigError, DataError, EngineError


@pytest.mark.parametrize("which", ["chain_model", "residual_model"])
def test_every_candidate_splits_exactly(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model: Path = request.getfixturevalue(which)
    inputs = real_inputs(model, count=4)
    for i, cut in enumerate(candidate_cuts(load_graph(model))):
        result = split_model(model, cut.tensors, tmp_path / str(i))
        check = verify_split(model, result, inputs)
        assert check.max_abs_diff <= 1e-4
        assert check.samples == 4


def test_files_batch_axis_and_ir_version(residual_model: Path, tmp_path: Path) -> None:
    # The residual model fixes batch 1; the head and tail still take any batch.
    result = split_model(residual_model, ["b1_out"], tmp_path)
    assert result.head_path == tmp_path / "residual.head.onnx"
    assert result.tail_path == tmp_path / "residual.tail.onnx"
    for path in (result.head_path, result.tail_path):
        model = onnx.load(str(path))
        assert model.ir_version == 10
        for value in list(model.graph.input) + list(model.graph.output):
            assert value.type.tensor_type.shape.dim[0].dim_param == "batch"
    with open_engine(result.head_path) as head, open_engine(result.tail_path) as tail:
        x = real_inputs(residual_model, count=3)["x"]
        act = head.infer({"x": x})["b1_out"]
        assert act.shape == (3, 8, 28, 28)
        assert tail.infer({"b1_out": act})["logits"].shape == (3, 10)


def test_multi_tensor_cut(residual_model: Path, tmp_path: Path) -> None:
    result = split_model(residual_model, ["b1_relu1", "b0_out"], tmp_path)
    tail = onnx.load(str(result.tail_path))
    assert [v.name for v in tail.graph.input] == ["b1_relu1", "b0_out"]
    check = verify_split(
        residual_model, result, real_inputs(residual_model, data="digits", count=5)
    )
    assert check.max_abs_diff <= 1e-4 and check.samples == 5


def test_extra_head_output(chain_model: Path, tmp_path: Path) -> None:
    result = split_model(chain_model, ["r1"], tmp_path, head_outputs=["pool"])
    assert result.head_outputs == ("pool",)
    head = onnx.load(str(result.head_path))
    assert [v.name for v in head.graph.output] == ["r1", "pool"]
    assert verify_split(chain_model, result, real_inputs(chain_model)).max_abs_diff <= 1e-4


def test_unknown_tensor_is_a_config_error(chain_model: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no tensor named 'relu9'; candidate cuts: c0, r0"):
        split_model(chain_model, ["relu9"], tmp_path)
    with pytest.raises(ConfigError, match=r"head output: no tensor named 'zz'"):
        split_model(chain_model, ["r1"], tmp_path, head_outputs=["zz"])
    assert not list(tmp_path.iterdir())  # nothing written on error


def test_verify_catches_a_wrong_tail(chain_model: Path, tmp_path: Path) -> None:
    result = split_model(chain_model, ["r1"], tmp_path)
    tail = onnx.load(str(result.tail_path))
    for init in tail.graph.initializer:
        if init.name == "fc_w":
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.01, "fc_w"))
    onnx.save(tail, str(result.tail_path))
    with pytest.raises(
        EngineError, match=r"split check failed: .* output 'logits' by .* tolerance 0.0001"
    ):
        verify_split(chain_model, result, real_inputs(chain_model))


def test_real_inputs_are_photographs(chain_model: Path, residual_model: Path) -> None:
    rgb = real_inputs(chain_model, count=6)["x"]
    assert rgb.shape == (6, 3, 32, 32) and rgb.dtype == np.float32
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0
    assert len({float(img.mean()) for img in rgb[:4]}) == 4  # four different photographs
    gray = real_inputs(residual_model, count=2)["x"]
    assert gray.shape == (2, 1, 28, 28)
    digits = real_inputs(chain_model, data="digits", count=3)["x"]
    # gray digits replicated to three equal channels
    assert digits.shape == (3, 3, 32, 32) and np.array_equal(digits[:, 0], digits[:, 2])
    with pytest.raises(DataError, match="dataset spec 'bogus'"):
        real_inputs(chain_model, data="bogus")
