"""A ResNet-18-shaped CNN with seeded weights, and its data, for ``studies/resnet18_like.yaml``.

The model is built with ``onnx.helper`` on first use (``model: {build: "resnet18_like.py:build"}``)
into ``~/.cache/quantuna/`` (about 45 MiB, so it is not committed):

- the layers of torchvision's ResNet-18: a 7x7/2 stem Conv, a 3x3/2 MaxPool, four stages of two
  BasicBlocks (64, 128, 256, 512 channels; the first block of stages 2-4 has a 1x1/2 downsample
  Conv on its shortcut), a GlobalAveragePool and a fully connected layer: 20 Conv, 1 Gemm;
- batch normalisation folded into the Conv weights and biases, as exporters do, so the graph has
  no BatchNormalization node;
- input ``input`` float32 ``[batch, 3, 224, 224]`` (ImageNet-normalised pixels), output
  ``logits`` float32 ``[batch, 1000]``, opset 17, a unique name on every node.

The weights are not trained. They are He-initialised, and each Conv is followed by a batch norm
whose running statistics are measured on seeded images (layer-sequential unit-variance, LSUV) and
whose scale and shift are drawn at random, then folded: activations keep a trained network's
scale through the eight residual blocks, and the per-channel weight ranges spread over an order
of magnitude or more, as folded batch norms make them (so per-channel weights and the
calibration method matter). The classifier is a nearest-prototype head: class ``c`` stands for a
seeded picture, ``prototype(c)``, and its logit is 10 x the cosine between the image's centred
features and the prototype's.

The images are seeded 1/f-noise pictures (the amplitude spectrum of natural images), RGB-like
correlated channels of roughly unit variance as after ImageNet normalisation: each is a class
prototype seen through 30 % fresh noise. Since the weights are random, **the accuracy metric is
the top-1 agreement with the fp32 model**: the evaluation labels are the fp32 model's own top-1
on 128 seeded evaluation images, computed once with onnxruntime and cached beside the model
(``resnet18_like.labels.npz``, keyed by the model's sha256). The fp32 model scores 1.0 by
definition; a quantized model scores the fraction of images whose top-1 it keeps (about 0.95 for
good int8 configs, visibly less for poor ones such as per-tensor 7-bit weights or a 99.9
percentile).

The loaders ``calibration()`` and ``evaluation()`` use the model at ``MODEL_PATH``
(``~/.cache/quantuna/resnet18_like.onnx``, the spec's ``model.path``), building it if missing;
building takes about a minute on two cores (1000 prototypes go through the network once).

Build it by hand with ``python studies/resnet18_like.py [path]``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODEL_PATH = Path("~/.cache/quantuna/resnet18_like.onnx").expanduser()
INPUT, OUTPUT = "input", "logits"
SIZE = 224
NUM_CLASSES = 1000
STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)
OPSET = 17
BUILD_SEED, CALIBRATION_SEED, EVALUATION_SEED, PROTOTYPE_SEED = 0, 1, 2, 3
NOISE = 0.3  # how far an image lies from its class prototype (see make_images)
STATS_IMAGES = 8  # seeded images the folded batch-norm statistics are measured on
CALIBRATION_IMAGES = 32
EVALUATION_IMAGES = 128
BATCH = 16


# --- images ----------------------------------------------------------------------------------


def _picture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One 1/f-noise picture ``[3, size, size]``: natural images' amplitude spectrum, RGB-like
    correlated channels, its own contrast and colour cast, each channel roughly N(0, 1)."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.maximum(np.sqrt(fx**2 + fy**2), 1.0 / size)
    mix = np.array([[1.0, 0.3, 0.1], [0.9, 0.4, 0.1], [0.8, 0.3, 0.4]])
    noise = rng.standard_normal((3, size, size))
    field = np.fft.irfft2(np.fft.rfft2(noise) / f, s=(size, size))
    field = np.einsum("cj,jhw->chw", mix, field)
    field -= field.mean(axis=(1, 2), keepdims=True)
    field /= field.std(axis=(1, 2), keepdims=True)
    return rng.uniform(0.7, 1.3) * field + rng.normal(0.0, 0.2, (3, 1, 1))


def prototype(label: int, size: int = SIZE) -> np.ndarray:
    """The seeded picture that class ``label`` stands for."""
    return _picture(np.random.default_rng([PROTOTYPE_SEED, label]), size)


def make_images(count: int, seed: int, size: int = SIZE, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Seeded images, float32 ``[count, 3, size, size]``: each a class prototype seen through noise.

    Image ``i`` is ``sqrt(1 - r^2) * prototype(c_i) + r * noise_i`` with a random class ``c_i``, a
    fresh 1/f-noise picture ``noise_i`` and ``r = NOISE`` (0.3): the fp32 model recognises most
    images with a margin that int8 noise can close on some of them, as on real data.
    """
    rng = np.random.default_rng(seed)
    out = np.empty((count, 3, size, size), np.float32)
    keep = np.sqrt(1.0 - NOISE**2)
    for i in range(count):
        label = int(rng.integers(num_classes))
        out[i] = keep * prototype(label, size) + NOISE * _picture(rng, size)
    return out


# --- the graph -------------------------------------------------------------------------------


class _Graph:
    """Nodes and initializers of the network, with one unique name per node."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.weights: dict[str, np.ndarray] = {}
        self.convs: list[tuple[str, str]] = []  # (node name, output) in graph order

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    def conv(self, x: str, name: str, cin: int, cout: int, k: int, stride: int, rng: Any) -> str:
        # He initialisation; the folded batch norm rescales it later.
        w = rng.normal(0.0, np.sqrt(2.0 / (cin * k * k)), (cout, cin, k, k)).astype(np.float32)
        self.weights[f"{name}.weight"] = w
        self.weights[f"{name}.bias"] = np.zeros(cout, np.float32)
        out = self.node(
            "Conv", [x, f"{name}.weight", f"{name}.bias"], name,
            kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4,
        )
        self.convs.append((name, out))
        return out

    def model(self, size: int, outputs: list[str] | None = None) -> onnx.ModelProto:
        if outputs is None:
            classes = self.weights["fc.weight"].shape[0]
            declared = [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", classes])]
        else:  # a truncated model, to measure the statistics of an inner tensor
            declared = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs]
        graph = helper.make_graph(
            self.nodes,
            "resnet18_like",
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["batch", 3, size, size])],
            declared,
            [numpy_helper.from_array(a, n) for n, a in self.weights.items()],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 8
        return model


def _network(rng: Any, num_classes: int) -> tuple[_Graph, dict[str, str]]:
    """The ResNet-18 layers; returns the graph and, per Conv, the role of its batch norm."""
    g = _Graph()
    role: dict[str, str] = {}
    x = g.conv(INPUT, "conv1", 3, 64, 7, 2, rng)
    role["conv1"] = "main"
    x = g.node("Relu", [x], "relu1")
    x = g.node("MaxPool", [x], "maxpool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for s, (cout, stride) in enumerate(STAGES, start=1):
        for b in range(2):
            p = f"layer{s}.{b}"
            st = stride if b == 0 else 1
            y = g.conv(x, f"{p}.conv1", cin, cout, 3, st, rng)
            role[f"{p}.conv1"] = "main"
            y = g.node("Relu", [y], f"{p}.relu1")
            y = g.conv(y, f"{p}.conv2", cout, cout, 3, 1, rng)
            role[f"{p}.conv2"] = "residual"
            shortcut = x
            if st != 1 or cin != cout:
                shortcut = g.conv(x, f"{p}.downsample", cin, cout, 1, st, rng)
                role[f"{p}.downsample"] = "main"
            y = g.node("Add", [y, shortcut], f"{p}.add")
            x = g.node("Relu", [y], f"{p}.relu2")
            cin = cout
    x = g.node("GlobalAveragePool", [x], "avgpool")
    x = g.node("Flatten", [x], "flatten", axis=1)
    g.weights["fc.weight"] = rng.normal(0.0, 1.0 / np.sqrt(cin), (num_classes, cin)).astype(np.float32)
    g.weights["fc.bias"] = np.zeros(num_classes, np.float32)
    g.node("Gemm", [x, "fc.weight", "fc.bias"], OUTPUT, transB=1)
    return g, role


def _run(model: onnx.ModelProto, images: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    chunks = [session.run(None, {INPUT: images[i : i + BATCH]}) for i in range(0, len(images), BATCH)]
    return [np.concatenate(parts) for parts in zip(*chunks)]


def _fold_batch_norms(g: _Graph, role: dict[str, str], images: np.ndarray, rng: Any, size: int) -> None:
    """Fold a batch norm into every Conv, its statistics measured on ``images`` (LSUV order).

    The scale of a main-path batch norm is log-uniform in [0.05, 1.6] per channel, the residual
    branch's last one in [0.02, 0.6] (trained ResNets keep their residual branches small), the
    shift N(-0.1, 0.15): the folded weights get a trained network's per-channel spread.
    """
    for name, out in g.convs:
        (y,) = _run(g.model(size, [out]), images)
        mean, std = y.mean(axis=(0, 2, 3)), y.std(axis=(0, 2, 3)) + 1e-5
        low, high = (0.02, 0.6) if role[name] == "residual" else (0.05, 1.6)
        gamma = np.exp(rng.uniform(np.log(low), np.log(high), mean.shape))
        beta = rng.normal(-0.1, 0.15, mean.shape)
        scale = (gamma / std).astype(np.float32)
        g.weights[f"{name}.weight"] *= scale[:, None, None, None]
        g.weights[f"{name}.bias"] = (beta - mean * gamma / std).astype(np.float32)


def _prototype_classifier(g: _Graph, size: int, num_classes: int) -> None:
    """Make the classifier score each class by the cosine between the image's centred features and
    its prototype's (a nearest-class-mean head, as a trained head would separate the classes)."""
    model = g.model(size, ["flatten"])
    chunks = []
    for start in range(0, num_classes, 50):
        labels = range(start, min(start + 50, num_classes))
        images = np.stack([prototype(c, size) for c in labels]).astype(np.float32)
        chunks.append(_run(model, images)[0])
    features = np.concatenate(chunks).astype(np.float64)
    mean = features.mean(axis=0)
    rows = features - mean
    norms = np.linalg.norm(rows, axis=1, keepdims=True) + 1e-12
    rows *= 10.0 / (norms * np.median(norms))  # logits = 10 x cosine, for a typical image
    g.weights["fc.weight"] = rows.astype(np.float32)
    g.weights["fc.bias"] = (-rows @ mean).astype(np.float32)


def build(path: str | os.PathLike[str] = MODEL_PATH, *, size: int = SIZE,
          num_classes: int = NUM_CLASSES, seed: int = BUILD_SEED) -> Path:
    """Write the ResNet-18-shaped fp32 model to ``path`` (deterministic for a seed).

    Args:
        path: the ``.onnx`` file to write.
        size: the input resolution (224; the tests build it at 32).
        num_classes: the classifier's width.
        seed: the weights' seed.

    Returns:
        The path written.
    """
    path = Path(path)
    rng = np.random.default_rng(seed)
    g, role = _network(rng, num_classes)
    images = make_images(STATS_IMAGES, seed + 100, size, num_classes)
    _fold_batch_norms(g, role, images, rng, size)
    _prototype_classifier(g, size, num_classes)
    model = g.model(size)
    model = onnx.shape_inference.infer_shapes(model)
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    onnx.save(model, str(tmp))
    os.replace(tmp, path)
    return path


# --- data loaders (named by the spec) ---------------------------------------------------------


def ensure_model(path: str | os.PathLike[str] = MODEL_PATH) -> Path:
    """The model at ``path``, built first if missing (under quantuna's build lock)."""
    from quantuna.model import build_model

    return build_model(Path(path), f"{Path(__file__).resolve()}:build", where=str(path))


def _model_shape(path: Path) -> tuple[int, int]:
    """The input resolution and the number of classes of a built model."""
    model = onnx.load(str(path), load_external_data=False)
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    classes = next(i for i in model.graph.initializer if i.name == "fc.weight").dims[0]
    return int(size), int(classes)


def fp32_labels(path: str | os.PathLike[str], images: np.ndarray, seed: int) -> np.ndarray:
    """The fp32 model's top-1 on ``images``, cached beside the model keyed by its sha256."""
    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = path.with_name(f"{path.stem}.labels.npz")
    key = f"{digest}-{seed}-{len(images)}"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return stored["labels"]
    model = onnx.load(str(path))
    (logits,) = _run(model, images)
    labels = logits.argmax(axis=1).astype(np.int64)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, key=np.array(key), labels=labels)
    os.replace(tmp, cache)
    return labels


def calibration_batches(path: str | os.PathLike[str] = MODEL_PATH, count: int = CALIBRATION_IMAGES,
                        batch: int = BATCH) -> Iterator[dict[str, np.ndarray]]:
    """``count`` seeded calibration images as ``{input: array}`` batches."""
    images = make_images(count, CALIBRATION_SEED, *_model_shape(ensure_model(path)))
    for i in range(0, count, batch):
        yield {INPUT: images[i : i + batch]}


def evaluation_batches(path: str | os.PathLike[str] = MODEL_PATH, count: int = EVALUATION_IMAGES,
                       batch: int = BATCH) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray]]:
    """``count`` seeded evaluation images with the fp32 model's top-1 as labels."""
    path = ensure_model(path)
    images = make_images(count, EVALUATION_SEED, *_model_shape(path))
    labels = fp32_labels(path, images, EVALUATION_SEED)
    for i in range(0, count, batch):
        yield {INPUT: images[i : i + batch]}, labels[i : i + batch]


def calibration() -> list[dict[str, np.ndarray]]:
    """The spec's calibration loader."""
    return list(calibration_batches())


def evaluation() -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """The spec's evaluation loader."""
    return list(evaluation_batches())


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else MODEL_PATH
    print(build(target))
