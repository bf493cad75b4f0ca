"""Real ImageNet architectures at 224x224, built from what the onnx wheel ships.

The onnx wheel carries, as backend test data, light copies of ONNX-model-zoo
classics (``onnx/backend/test/data/light/``): the exact graphs users bring (IR 3,
opset 9, initializers also listed as graph inputs, a batch of 1 written into
Reshapes), with every weight replaced by a ``ConstantOfShape`` fill. This module
puts seeded weights in place of the fills, so the graphs compute something that
varies with the input, and writes:

- ``<name>.onnx``: the IR-3 file as the zoo has it, weights inline and listed as
  inputs (``resnet50``, ``squeezenet``, ``shufflenet``, ``densenet121``,
  ``inception_v2``);
- ``<name>_opset17.onnx`` + ``<name>_opset17.onnx.data``: the same model
  version-converted to opset 17 and IR 8, initializers no longer listed as inputs,
  weights in an external-data file, as a current exporter writes it.

No trained ImageNet weights can be had here, so these answer scale questions
(sizes, times, exactness of a cut), never accuracy ones. Weights are drawn so that
activations stay O(1) through the depth: He-normal convolutions, batch norms that
are close to the identity, and a small scale on the last batch norm of a residual
branch (its output is summed with the skip; unscaled, the variance would double
per block).

    >>> from jetsplit.tools.realzoo import build_model
    >>> path = build_model("squeezenet", "/tmp/zoo")        # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto, numpy_helper

from jetsplit.errors import ConfigError

__all__ = ["ARCHITECTURES", "MODELS", "build_model", "fit_classifier", "light_path"]

# The zoo's classics the onnx wheel ships with a 1x3x224x224 input.
ARCHITECTURES = ("squeezenet", "shufflenet", "inception_v2", "densenet121", "resnet50")
# Every variant build_model writes: the IR-3 files and the opset-17 external-data ones.
MODELS = ARCHITECTURES + tuple(f"{name}_opset17" for name in ARCHITECTURES)
# Scale of the last batch norm in a residual branch (see the module docstring).
_RESIDUAL_GAMMA = 0.3
_CURRENT_OPSET = 17
_CURRENT_IR = 8


def light_path(arch: str) -> Path:
    """Where the onnx wheel keeps the light copy of ``arch``."""
    base = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"
    path = base / f"light_{arch}.onnx"
    if arch not in ARCHITECTURES or not path.is_file():
        raise ConfigError(
            f"real model {arch!r}: expected one of {', '.join(ARCHITECTURES)} "
            f"(the onnx wheel's light copies in {base})"
        )
    return path


def build_model(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write model ``name`` (one of :data:`MODELS`) into ``out_dir``; reuse it if there.

    The file is written under a temporary name and renamed, so a cache shared by
    several processes never holds half a model.
    """
    if name not in MODELS:
        raise ConfigError(f"real model {name!r}: expected one of {', '.join(MODELS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.onnx"
    if path.is_file():
        return path
    arch, _, variant = name.partition("_opset")
    model = _seeded(onnx.load(str(light_path(arch))), seed)
    if variant:
        _save_current(model, path)
    else:
        tmp = path.with_suffix(".onnx.tmp")
        onnx.save(model, str(tmp))
        tmp.replace(path)
    return path


def fit_classifier(model_path: str | Path, images: np.ndarray, labels: np.ndarray,
                   num_classes: int, out_path: str | Path, ridge: float = 1.0) -> Path:
    """A copy of ``model_path`` whose final ``Gemm`` classifies ``num_classes`` classes,
    fitted by ridge least squares on the features it reads for ``images``
    (preprocessed, one batch). The rest of the model, IR and opset are kept.

    A user's model fine-tuned on their own classes looks like this: the zoo's
    backbone with a new last layer. It gives calibration real, mostly-right answers
    to tune on.
    """
    from jetsplit.calibration.graph import load_graph
    from jetsplit.calibration.modelfile import save_model
    from jetsplit.calibration.split import extract
    from jetsplit.engines.onnxruntime import OnnxRuntimeEngine

    graph = load_graph(model_path)
    gemm = next((n for n in reversed(graph.nodes) if n.op_type == "Gemm"), None)
    if gemm is None or not any(a.name == "transB" and a.i == 1 for a in gemm.attribute):
        raise ConfigError(f"{Path(model_path).name}: no final Gemm with transB=1 to refit")
    features_name = gemm.input[0]
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    probe = out.with_suffix(".features.onnx")
    onnx.save(extract(graph, graph.inputs, [features_name]), str(probe))
    with OnnxRuntimeEngine(probe) as engine:
        feats = engine.infer({graph.inputs[0]: images})[features_name].reshape(len(images), -1)
    probe.unlink()
    x = np.concatenate([feats, np.ones((len(feats), 1))], axis=1).astype(np.float64)
    y = np.eye(num_classes)[labels] * 8.0  # peaked like a trained classifier's logits
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)
    weight, bias = w[:-1].T.astype(np.float32), w[-1].astype(np.float32)
    model = onnx.load(str(graph.path))
    for tensor in model.graph.initializer:
        if tensor.name in (gemm.input[1], gemm.input[2]):
            tensor.CopyFrom(numpy_helper.from_array(weight if tensor.name == gemm.input[1] else bias, tensor.name))
    for value in list(model.graph.input) + list(model.graph.output):
        dims = value.type.tensor_type.shape.dim
        if value.name == gemm.input[1]:
            dims[0].dim_value = num_classes
        elif value.name == gemm.input[2] or value.name in graph.outputs:
            dims[len(dims) - 1 if value.name == gemm.input[2] else 1].dim_value = num_classes
    del model.graph.value_info[:]
    onnx.checker.check_model(model)
    save_model(model, out, external=bool(graph.external))  # written as the source was
    return out


# -- weights --------------------------------------------------------------------


def _seeded(model: ModelProto, seed: int) -> ModelProto:
    """``model`` with every ConstantOfShape fill replaced by a seeded initializer.

    The new initializers are listed as graph inputs too, as IR 3 requires (and as
    the zoo's files list theirs); the shape tensors the fills read are dropped.
    """
    graph = model.graph
    rng = np.random.default_rng(seed)
    consumers = _consumers(graph.node)
    shapes = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    fills = [n for n in graph.node if n.op_type == "ConstantOfShape" and n.input[0] in shapes]
    residual_bn = _residual_batchnorms(graph.node, consumers)
    new_inits = []
    for node in fills:
        name = node.output[0]
        shape = tuple(int(d) for d in shapes[node.input[0]])
        values = _draw(name, shape, consumers, residual_bn, rng)
        new_inits.append(numpy_helper.from_array(values.astype(np.float32), name))
    dropped = {n.input[0] for n in fills} - {
        i for n in graph.node if n.op_type != "ConstantOfShape" for i in n.input
    }
    kept_nodes = [n for n in graph.node if n not in fills]
    del graph.node[:]
    graph.node.extend(kept_nodes)
    kept = [t for t in graph.initializer if t.name not in dropped]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    kept_inputs = [v for v in graph.input if v.name not in dropped]
    del graph.input[:]
    graph.input.extend(kept_inputs)
    for tensor in new_inits:
        graph.input.append(
            onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims))
        )
    # Real weights in the scale layers DenseNet and Inception keep as inputs: the
    # light copies fill them with the same 0.02 as everything else.
    for tensor in graph.initializer:
        if tensor.name in {t.name for t in new_inits} or tensor.name in dropped:
            continue
        array = numpy_helper.to_array(tensor)
        if array.dtype == np.float32 and array.size > 1:
            role = _role(tensor.name, consumers, residual_bn)
            tensor.CopyFrom(
                numpy_helper.from_array(_values(role, array.shape, rng).astype(np.float32), tensor.name)
            )
    return model


def _consumers(nodes: Iterable[onnx.NodeProto]) -> dict[str, list[tuple[onnx.NodeProto, int]]]:
    out: dict[str, list[tuple[onnx.NodeProto, int]]] = {}
    for node in nodes:
        for i, name in enumerate(node.input):
            out.setdefault(name, []).append((node, i))
    return out


def _residual_batchnorms(
    nodes: Iterable[onnx.NodeProto], consumers: dict[str, list[tuple[onnx.NodeProto, int]]]
) -> set[str]:
    """Scale inputs of batch norms whose output goes straight into a Sum or Add
    with another computed tensor: the last of a residual branch."""
    found = set()
    for node in nodes:
        if node.op_type != "BatchNormalization":
            continue
        users = consumers.get(node.output[0], [])
        if any(user.op_type in ("Sum", "Add") and len(user.input) >= 2 for user, _ in users):
            found.add(node.input[1])
    return found


def _role(
    name: str,
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
    residual_bn: set[str],
) -> str:
    """What a weight is, from the first node that reads it (through Unsqueeze/Reshape)."""
    users = consumers.get(name, [])
    while users and users[0][0].op_type in ("Unsqueeze", "Reshape"):
        users = consumers.get(users[0][0].output[0], [])
    if not users:
        return "other"
    node, index = users[0]
    if node.op_type == "Conv":
        return ("conv_w", "conv_b")[min(index, 2) - 1] if index else "other"
    if node.op_type == "Gemm":
        return "gemm_w" if index == 1 else "gemm_b"
    if node.op_type == "BatchNormalization":
        if index == 1:
            return "bn_gamma_residual" if name in residual_bn else "bn_gamma"
        return ("bn_beta", "bn_mean", "bn_var")[index - 2]
    if node.op_type == "Mul":
        return "scale"
    if node.op_type == "Add":
        return "shift"
    return "other"


def _draw(
    name: str,
    shape: tuple[int, ...],
    consumers: dict[str, list[tuple[onnx.NodeProto, int]]],
    residual_bn: set[str],
    rng: np.random.Generator,
) -> np.ndarray:
    return _values(_role(name, consumers, residual_bn), shape, rng)


def _values(role: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    size = int(np.prod(shape)) if shape else 1
    if role == "conv_w":
        fan_in = int(np.prod(shape[1:])) or 1
        return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
    if role == "gemm_w":
        fan_in = shape[1] if len(shape) == 2 else size
        return rng.normal(0.0, 4.0 / np.sqrt(fan_in), shape)
    if role in ("conv_b", "gemm_b", "bn_beta", "shift"):
        return rng.normal(0.0, 0.05, shape)
    if role == "bn_mean":
        return rng.normal(0.0, 0.05, shape)
    if role == "bn_var":
        return rng.uniform(0.8, 1.2, shape)
    if role == "bn_gamma":
        return rng.uniform(0.8, 1.2, shape)
    if role == "bn_gamma_residual":
        return rng.uniform(0.8, 1.2, shape) * _RESIDUAL_GAMMA
    if role == "scale":
        return rng.uniform(0.8, 1.2, shape)
    return rng.normal(0.0, 0.05, shape)


# -- the current-exporter variant ----------------------------------------------------


def _save_current(model: ModelProto, path: Path) -> None:
    """Opset 17, IR 8, initializers not listed as inputs, weights in ``<file>.data``."""
    from onnx import version_converter

    inits = {t.name for t in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    del model.graph.input[:]
    model.graph.input.extend(inputs)
    model.ir_version = 4  # the converter wants initializers that are not inputs allowed
    converted = version_converter.convert_version(model, _CURRENT_OPSET)
    converted.ir_version = _CURRENT_IR
    onnx.checker.check_model(converted)
    data_name = path.name + ".data"
    tmp = path.with_suffix(".onnx.tmp")
    onnx.save(
        converted,
        str(tmp),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=data_name,
        size_threshold=1024,
    )
    tmp.replace(path)
