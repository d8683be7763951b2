"""A BERT-style classifier with seeded weights, and its token data, for ``studies/bert_like.yaml``.

The model is built on first use (``model: {build: "bert_like.py:build"}``) into
``~/.cache/quantuna/bert_like.onnx`` from ``transformers``' own ``BertForSequenceClassification``
and a ``BertConfig`` (4 layers, hidden 256, 4 heads, intermediate 1024, vocabulary 4096, 128
positions, 4 classes); nothing is downloaded. It is exported with ``torch.onnx`` at opset 17 with
dynamic batch and sequence axes: inputs ``input_ids``, ``attention_mask``, ``token_type_ids``
(int64 ``[batch, sequence]``), output ``logits`` float32 ``[batch, 4]``.

**Building needs torch and transformers; running the study does not.** quantuna never depends on
them: install them where you build (``pip install torch==2.13.0 transformers onnx``), or build the
file once with a Python that has them: ``python studies/bert_like.py [path]``. Without them the
spec's build fails with one line naming that command.

The weights are transformers' seeded initialisation (``torch.manual_seed(0)``), not trained. So
that the classes are separated as a trained head would separate them, the classifier is a
nearest-prototype head: class ``c`` stands for a seeded "topic" (a set of 64 tokens), its weight
row is the centred pooled feature of topic ``c``'s sequences, scaled so that logits are about
10 x the cosine. Each evaluation sentence draws 70 % of its tokens from one topic and the rest from
the whole vocabulary, with a random length (the rest padded, ``attention_mask`` 0) and two
segments. Since the weights are random, **the accuracy metric is the top-1 agreement with the fp32
model** (labels: the fp32 model's own top-1, computed once with onnxruntime and cached beside the
model keyed by its sha256); ``evaluation_logits`` gives the fp32 logits instead, for the
``cosine`` metric people use for embedding models.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

MODEL_PATH = Path("~/.cache/quantuna/bert_like.onnx").expanduser()
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
LAYERS, HIDDEN, HEADS, FFN, VOCAB, POSITIONS, CLASSES = 4, 256, 4, 1024, 4096, 128, 4
SEQUENCE, TOPIC_TOKENS, TOPIC_SHARE = 64, 64, 0.7
CALIBRATION_SEED, EVALUATION_SEED, TOPIC_SEED, HEAD_SEED = 1, 2, 3, 4
CALIBRATION_SAMPLES, EVALUATION_SAMPLES, BATCH = 32, 128, 16
PIP = "pip install torch==2.13.0 transformers onnx"


def topic(label: int) -> np.ndarray:
    """The seeded token ids class ``label`` stands for."""
    rng = np.random.default_rng([TOPIC_SEED, label])
    return rng.choice(np.arange(1000, VOCAB), TOPIC_TOKENS, replace=False)


def make_tokens(count: int, seed: int, sequence: int = SEQUENCE,
                labels: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Seeded sentences ``{input_ids, attention_mask, token_type_ids}``, int64 ``[count, sequence]``.

    Token 101 opens each sentence and 102 closes it ([CLS], [SEP] as in BERT's vocabulary), 0 pads.
    """
    rng = np.random.default_rng(seed)
    ids = np.zeros((count, sequence), np.int64)
    mask = np.zeros((count, sequence), np.int64)
    types = np.zeros((count, sequence), np.int64)
    for i in range(count):
        label = int(labels[i]) if labels is not None else int(rng.integers(CLASSES))
        length = int(rng.integers(sequence // 2, sequence + 1))
        body = np.where(rng.random(length - 2) < TOPIC_SHARE, rng.choice(topic(label), length - 2),
                        rng.integers(1000, VOCAB, length - 2))
        ids[i, :length] = [101, *body, 102]
        mask[i, :length] = 1
        types[i, length // 2 : length] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _torch() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError as exc:
        raise RuntimeError(f"the build needs torch and transformers: {PIP} (or: python "
                           f"studies/{Path(__file__).name} PATH, with them; {exc.name} is missing)") from None
    return torch, transformers


def _network() -> Any:
    """The seeded ``BertForSequenceClassification`` with its nearest-prototype head."""
    torch, transformers = _torch()
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        intermediate_size=FFN, max_position_embeddings=POSITIONS, num_labels=CLASSES,
        hidden_act="gelu", attn_implementation="eager",
    )
    model = transformers.BertForSequenceClassification(config).eval()
    with torch.no_grad():
        rows = []
        for label in range(CLASSES):
            batch = make_tokens(32, HEAD_SEED + label, labels=np.full(32, label))
            inputs = {k: torch.from_numpy(v) for k, v in batch.items()}
            pooled = model.bert(**inputs).pooler_output
            rows.append(pooled.mean(0).double().numpy())
        features = np.stack(rows)
        centred = features - features.mean(axis=0)
        centred *= 10.0 / np.linalg.norm(centred, axis=1, keepdims=True)
        model.classifier.weight.copy_(torch.from_numpy(centred).float())
        model.classifier.bias.copy_(torch.from_numpy(-(centred @ features.mean(axis=0))).float())
    return model


def build(path: str | os.PathLike[str] = MODEL_PATH) -> Path:
    """Write the BERT-like fp32 model to ``path`` (deterministic; needs torch and transformers)."""
    torch, _ = _torch()
    import onnx

    model = _network()
    sample = make_tokens(2, 0)
    args = tuple(torch.from_numpy(sample[k]) for k in INPUTS)
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    torch.onnx.export(
        model, args, str(tmp), input_names=list(INPUTS), output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    onnx.checker.check_model(str(tmp))
    os.replace(tmp, path)
    return path


# --- data loaders (named by the spec; numpy and onnxruntime only) ------------------------------


def ensure_model(path: str | os.PathLike[str] = MODEL_PATH) -> Path:
    """The model at ``path``, built first if missing (under quantuna's build lock)."""
    from quantuna.model import build_model

    return build_model(Path(path), f"{Path(__file__).resolve()}:build", where=str(path))


def fp32_logits(path: str | os.PathLike[str], tokens: dict[str, np.ndarray], seed: int) -> np.ndarray:
    """The fp32 model's logits on ``tokens``, cached beside the model keyed by its sha256."""
    import onnxruntime as ort

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    cache = path.with_name(f"{path.stem}.logits-{seed}.npz")
    key = f"{digest}-{seed}-{len(tokens['input_ids'])}"
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                return stored["logits"]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    count = len(tokens["input_ids"])
    logits = np.concatenate([session.run(None, {k: v[i : i + BATCH] for k, v in tokens.items()})[0]
                             for i in range(0, count, BATCH)])
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, key=np.array(key), logits=logits)
    os.replace(tmp, cache)
    return logits


def _batches(tokens: dict[str, np.ndarray], labels: np.ndarray | None) -> Iterator[Any]:
    count = len(tokens["input_ids"])
    for i in range(0, count, BATCH):
        batch = {k: v[i : i + BATCH] for k, v in tokens.items()}
        yield batch if labels is None else (batch, labels[i : i + BATCH])


def calibration() -> list[dict[str, np.ndarray]]:
    """The spec's calibration loader: 32 seeded sentences."""
    ensure_model()
    return list(_batches(make_tokens(CALIBRATION_SAMPLES, CALIBRATION_SEED), None))


def evaluation() -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """The spec's evaluation loader: 128 seeded sentences, the fp32 model's top-1 as labels."""
    tokens = make_tokens(EVALUATION_SAMPLES, EVALUATION_SEED)
    labels = fp32_logits(ensure_model(), tokens, EVALUATION_SEED).argmax(axis=1).astype(np.int64)
    return list(_batches(tokens, labels))


def evaluation_logits() -> list[tuple[dict[str, np.ndarray], np.ndarray]]:
    """The same sentences with the fp32 logits as labels, for ``accuracy: {metric: cosine}``."""
    tokens = make_tokens(EVALUATION_SAMPLES, EVALUATION_SEED)
    return list(_batches(tokens, fp32_logits(ensure_model(), tokens, EVALUATION_SEED)))


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else MODEL_PATH))
