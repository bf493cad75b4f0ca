"""Cut an ONNX model into a head (edge) and a tail (cloud), and prove the cut exact.

    >>> from jetsplit.calibration.split import split_model, verify_split, real_inputs
    >>> result = split_model("big.onnx", ["/layer2/relu_1/Relu_output_0"], "out/")  # doctest: +SKIP
    >>> report = verify_split("big.onnx", result, real_inputs("big.onnx"))           # doctest: +SKIP
    >>> report.max_abs_diff <= 1e-4                                                   # doctest: +SKIP
    True

The head maps the graph inputs to the cut tensors (plus any extra head outputs, such
as an early exit's scores); the tail maps the cut tensors to the graph outputs.
Both are cut with ``onnx.utils.Extractor`` from a copy of the model whose batch
axis is a named dynamic dimension, so the edge can batch frames and the cloud can
batch requests from several devices.

Verification runs the full model and head-then-tail on *real* images (a dataset, or
scikit-image's bundled photographs): random noise keeps activations in ranges that
real inputs never see, and can hide a wrong cut behind a ReLU that is always off.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import ModelProto

from jetsplit.engines import open_engine
from jetsplit.errors import ConfigError, DataError, EngineError

from .batchaxis import fix_batch, unbatched_outputs
from .graph import ModelGraph, TensorInfo, check_cut, load_graph
from .modelfile import save_model

__all__ = [
    "DEFAULT_ATOL",
    "BATCH_DIM",
    "SplitResult",
    "VerifyResult",
    "extract",
    "is_batch_one",
    "real_inputs",
    "split_model",
    "verify_split",
]

DEFAULT_ATOL = 1e-4
BATCH_DIM = "batch"
# ONNX Runtime 1.31 refuses the IR version 14 that onnx 1.23 writes by default.
_MAX_IR_VERSION = 10
# Photographs that scikit-image ships inside its wheel (no download): RGB or gray.
_SAMPLE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins")
# Spatial size used when a model leaves its input's height or width dynamic.
_DEFAULT_SIDE = 224


@dataclass(frozen=True)
class SplitResult:
    """Where the head and tail were written, and what crosses between them.

    ``batch_one`` names the pieces ("head", "tail") that keep a batch of 1 because
    the model pins it in a way that cannot be proven safe to generalise; they run
    one sample at a time. ``files`` is every file written (external data too).
    """

    head_path: Path
    tail_path: Path
    cut_tensors: tuple[str, ...]
    head_outputs: tuple[str, ...] = ()
    batch_one: tuple[str, ...] = ()
    files: tuple[Path, ...] = ()
    batch_rewrites: tuple[str, ...] = ()


@dataclass(frozen=True)
class VerifyResult:
    """Largest absolute difference between full and head-then-tail, per output."""

    max_abs_diff: float
    per_output: dict[str, float]
    samples: int


def extract(graph: ModelGraph, inputs: Sequence[str], outputs: Sequence[str]) -> ModelProto:
    """The sub-model of ``graph`` from ``inputs`` to ``outputs``, with a dynamic batch axis.

    Where the model pins a batch of 1 that :mod:`.batchaxis` cannot prove safe to
    generalise, the sub-model keeps batch 1 (see :func:`is_batch_one`): engines run
    it one sample at a time, never on a batch it would mix.
    """
    source = graph.batched_model(BATCH_DIM)
    available = {v.name for v in source.graph.input} | {v.name for v in source.graph.value_info}
    available |= {v.name for v in source.graph.output}
    untyped = [n for n in list(inputs) + list(outputs) if n not in available]
    if untyped:
        raise EngineError(
            f"{graph.path.name}: shape inference gives no type for {', '.join(repr(n) for n in untyped)} "
            "(an operator ONNX cannot infer); cannot make it a sub-model boundary"
        )
    sub = onnx.utils.Extractor(source).extract_model(list(inputs), list(outputs))
    sub.ir_version = min(graph.model.ir_version or _MAX_IR_VERSION, _MAX_IR_VERSION)
    if unbatched_outputs(sub, BATCH_DIM, graph.path.name):
        sub = fix_batch(sub)
    return sub


def is_batch_one(model: ModelProto) -> bool:
    """Whether ``extract`` had to keep ``model`` at a batch of exactly 1."""
    inits = {t.name for t in model.graph.initializer}
    dims = [
        v.type.tensor_type.shape.dim[0]
        for v in model.graph.input
        if v.name not in inits and len(v.type.tensor_type.shape.dim)
    ]
    return bool(dims) and all(d.HasField("dim_value") and d.dim_value == 1 for d in dims)


def split_model(
    model_path: str | Path,
    cut_tensors: Sequence[str],
    out_dir: str | Path,
    head_outputs: Sequence[str] = (),
) -> SplitResult:
    """Write ``<stem>.head.onnx`` and ``<stem>.tail.onnx`` cut at ``cut_tensors``.

    ``ConfigError`` if a name is unknown or the set is not a cut (a path from the
    inputs to the outputs goes around it). ``head_outputs`` are extra tensors the
    head also returns; they do not cross to the tail.
    """
    graph = load_graph(model_path)
    cut = check_cut(graph, cut_tensors)
    extra = tuple(n for n in dict.fromkeys(head_outputs) if n not in cut.tensors)
    unknown = [n for n in extra if not graph.is_tensor(n)]
    if unknown:
        raise ConfigError(
            f"{graph.path.name}: head output: no tensor named {', '.join(repr(n) for n in unknown)}"
        )
    head = extract(graph, graph.inputs, cut.tensors + extra)
    tail = extract(graph, cut.tensors, graph.outputs)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = graph.path.stem
    head_path, tail_path = out / f"{stem}.head.onnx", out / f"{stem}.tail.onnx"
    written: list[Path] = []
    batch_one: list[str] = []
    for part, model, path in (("head", head, head_path), ("tail", tail, tail_path)):
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as exc:
            raise EngineError(f"{path.name}: the extracted model is not valid ONNX: {exc}") from exc
        if is_batch_one(model):
            batch_one.append(part)
        written += save_model(model, path, external=bool(graph.external))
    return SplitResult(
        head_path,
        tail_path,
        cut.tensors,
        extra,
        tuple(batch_one),
        tuple(written),
        tuple(graph.batch_rewrites(BATCH_DIM)),
    )


def verify_split(
    model_path: str | Path,
    split: SplitResult,
    inputs: Mapping[str, np.ndarray],
    atol: float = DEFAULT_ATOL,
) -> VerifyResult:
    """Run the full model and head-then-tail on ``inputs``; ``EngineError`` if they differ.

    Every output is compared; a float output by max absolute difference, any other
    by exact equality (a mismatch counts as an infinite difference).
    """
    with (
        open_engine(model_path) as full,
        open_engine(split.head_path) as head,
        open_engine(split.tail_path) as tail,
    ):
        # A model that fixes a batch of 1 runs one sample at a time (Engine.infer).
        expected = full.infer(inputs)
        crossing = head.infer(inputs)
        got = tail.infer({name: crossing[name] for name in split.cut_tensors})
    per_output: dict[str, float] = {}
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            shape = None if have is None else have.shape
            raise EngineError(
                f"split check: output {name!r}: full model gives {want.shape}, head->tail {shape}"
            )
        if np.issubdtype(want.dtype, np.floating):
            diff = float(
                np.max(np.abs(want.astype(np.float64) - have.astype(np.float64)), initial=0.0)
            )
        else:
            diff = 0.0 if np.array_equal(want, have) else float("inf")
        per_output[name] = diff
    worst = max(per_output.values(), default=0.0)
    samples = len(next(iter(inputs.values()))) if inputs else 0
    if not worst <= atol:  # also catches NaN
        name = max(per_output, key=lambda n: per_output[n])
        raise EngineError(
            f"split check failed: head->tail differs from the full model on output {name!r} "
            f"by {worst:.3g} (max abs, {samples} samples; tolerance {atol:g})"
        )
    return VerifyResult(worst, per_output, samples)


def real_inputs(
    model: str | Path | ModelGraph, data: str | None = None, count: int = 4
) -> dict[str, np.ndarray]:
    """A batch of ``count`` real images for every input of ``model``, preprocessed.

    Images come from ``data`` (a dataset spec, see ``jetsplit.datasets``; its
    ``calib`` split) or, without one, from scikit-image's bundled photographs. Each
    is converted to the channels the input has (gray, or RGB replicated from gray),
    resized to its height and width with OpenCV, scaled by 1/255 for float inputs,
    and laid out NCHW or NHWC as the input is.
    """
    graph = model if isinstance(model, ModelGraph) else load_graph(model)
    if count < 1:
        raise DataError(f"count: expected at least 1 image, got {count}")
    images = _dataset_images(data, count) if data else _sample_images(count)
    return {name: _preprocess(images, graph.info(name), graph.path.name) for name in graph.inputs}


# -- helpers -------------------------------------------------------------------


def _sample_images(count: int) -> list[np.ndarray]:
    import skimage.data

    return [getattr(skimage.data, _SAMPLE_IMAGES[i % len(_SAMPLE_IMAGES)])() for i in range(count)]


def _dataset_images(spec: str, count: int) -> list[np.ndarray]:
    import cv2

    from jetsplit.datasets import load_dataset

    dataset = load_dataset(spec, "calib")
    if len(dataset) == 0:
        raise DataError(f"dataset {spec!r}: its calib split is empty")
    # Evenly spaced so a class-sorted set still gives several classes.
    picks = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
    images = []
    for i in picks:
        image = np.asarray(dataset.images[int(i)])
        if image.ndim == 3 and image.shape[2] == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # datasets hold OpenCV's BGR
        elif image.ndim == 3 and image.shape[2] == 1:
            image = image[:, :, 0]
        images.append(image)
    return images


def _preprocess(images: Sequence[np.ndarray], info: TensorInfo, model_name: str) -> np.ndarray:
    import cv2

    layout = _image_layout(info, model_name)
    channels, height, width, order = layout
    batch = []
    for image in images:
        if image.ndim == 3 and image.shape[2] == 4:
            image = image[:, :, :3]
        if channels == 1 and image.ndim == 3:
            image = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
        # INTER_AREA: the photographs are much larger than most model inputs.
        image = cv2.resize(
            np.ascontiguousarray(image), (width, height), interpolation=cv2.INTER_AREA
        )
        if image.ndim == 2:
            image = image[:, :, None]
        if image.shape[2] != channels:
            image = np.repeat(image, channels, axis=2)
        batch.append(image)
    stacked = np.stack(batch)  # N x H x W x C
    dtype = onnx.helper.tensor_dtype_to_np_dtype(info.elem_type)
    values: np.ndarray = (
        stacked.astype(np.float32) / 255.0 if np.issubdtype(dtype, np.floating) else stacked
    )
    if order == "NCHW":
        values = values.transpose(0, 3, 1, 2)
    elif order == "NHW":
        values = values[..., 0]
    elif order == "NF":
        values = values.reshape(len(values), -1)
    return np.ascontiguousarray(values.astype(dtype))


def _image_layout(info: TensorInfo, model_name: str) -> tuple[int, int, int, str]:
    """(channels, height, width, order) of an image input, or ``DataError``."""
    shape = info.shape
    if not info.elem_type or shape is None:
        raise DataError(
            f"{model_name}: input {info.name!r} has no known shape; cannot make images for it"
        )

    def side(d: int | None) -> int:
        return _DEFAULT_SIDE if d is None else d

    if len(shape) == 4 and shape[1] in (1, 3):
        return int(shape[1] or 3), side(shape[2]), side(shape[3]), "NCHW"
    if len(shape) == 4 and shape[3] in (1, 3):
        return int(shape[3] or 3), side(shape[1]), side(shape[2]), "NHWC"
    if len(shape) == 3:
        return 1, side(shape[1]), side(shape[2]), "NHW"
    if len(shape) == 2 and shape[1] is not None and int(shape[1] ** 0.5) ** 2 == shape[1]:
        root = int(shape[1] ** 0.5)
        return 1, root, root, "NF"  # a flattened square gray image, as MNIST MLPs take
    raise DataError(
        f"{model_name}: input {info.name!r} {info.describe_shape()} is not an image "
        "(N,C,H,W / N,H,W,C / N,H,W); cannot build real inputs for it"
    )
