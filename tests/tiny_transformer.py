"""A tiny transformer block built with onnx.helper: token and segment embeddings (Gather),
LayerNormalization, one self-attention head (MatMul, Softmax), a feed-forward MatMul pair and a
classifier; two int64 inputs ``input_ids`` and ``token_type_ids`` with dynamic batch and sequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

VOCAB, HIDDEN, FFN, CLASSES, SEQ = 64, 64, 128, 4, 8


def build_tiny_transformer(path: Path, seed: int = 0) -> Path:
    """Write the block to ``path`` (opset 17, a name on every node)."""
    rng = np.random.default_rng(seed)

    def w(name: str, *shape: int, scale: float = 0.0) -> onnx.TensorProto:
        std = scale or 1.0 / np.sqrt(shape[0])
        return numpy_helper.from_array(rng.normal(0, std, shape).astype(np.float32), name)

    inits = [
        w("word_emb", VOCAB, HIDDEN, scale=0.5), w("type_emb", 2, HIDDEN, scale=0.5),
        w("wq", HIDDEN, HIDDEN), w("wk", HIDDEN, HIDDEN), w("wv", HIDDEN, HIDDEN),
        w("wo", HIDDEN, HIDDEN), w("w1", HIDDEN, FFN), w("w2", FFN, HIDDEN),
        w("wc", HIDDEN, CLASSES),
        numpy_helper.from_array(np.ones(HIDDEN, np.float32), "ln_g"),
        numpy_helper.from_array(np.zeros(HIDDEN, np.float32), "ln_b"),
        numpy_helper.from_array(np.array(1 / np.sqrt(HIDDEN), np.float32), "scale"),
        numpy_helper.from_array(np.array(0, np.int64), "cls"),
    ]
    n = helper.make_node
    nodes = [
        n("Gather", ["word_emb", "input_ids"], ["we"], name="word_embeddings"),
        n("Gather", ["type_emb", "token_type_ids"], ["te"], name="type_embeddings"),
        n("Add", ["we", "te"], ["emb"], name="emb_add"),
        n("LayerNormalization", ["emb", "ln_g", "ln_b"], ["h0"], name="emb_ln", axis=-1),
        n("MatMul", ["h0", "wq"], ["q"], name="q_proj"),
        n("MatMul", ["h0", "wk"], ["k"], name="k_proj"),
        n("MatMul", ["h0", "wv"], ["v"], name="v_proj"),
        n("Transpose", ["k"], ["kt"], name="k_t", perm=[0, 2, 1]),
        n("MatMul", ["q", "kt"], ["scores"], name="scores"),
        n("Mul", ["scores", "scale"], ["scaled"], name="scale_mul"),
        n("Softmax", ["scaled"], ["probs"], name="softmax", axis=-1),
        n("MatMul", ["probs", "v"], ["ctx"], name="context"),
        n("MatMul", ["ctx", "wo"], ["attn"], name="o_proj"),
        n("Add", ["attn", "h0"], ["res1"], name="res1_add"),
        n("LayerNormalization", ["res1", "ln_g", "ln_b"], ["h1"], name="attn_ln", axis=-1),
        n("MatMul", ["h1", "w1"], ["f1"], name="ffn_in"),
        n("Relu", ["f1"], ["f1r"], name="ffn_act"),
        n("MatMul", ["f1r", "w2"], ["f2"], name="ffn_out"),
        n("Add", ["f2", "h1"], ["res2"], name="res2_add"),
        n("LayerNormalization", ["res2", "ln_g", "ln_b"], ["h2"], name="ffn_ln", axis=-1),
        n("Gather", ["h2", "cls"], ["pooled"], name="pool", axis=1),  # the first token
        n("MatMul", ["pooled", "wc"], ["logits"], name="classifier"),
    ]
    graph = helper.make_graph(
        nodes, "tiny_transformer",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
         helper.make_tensor_value_info("token_type_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def write_token_data(directory: Path, model_path: Path, seed: int = 0) -> None:
    """Seeded token ids (calib.npz, eval.npz); eval labels are the fp32 model's top-1."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)

    def tokens(count: int) -> dict[str, np.ndarray]:
        ids = rng.integers(0, VOCAB, (count, SEQ), dtype=np.int64)
        types = (np.arange(SEQ) >= SEQ // 2).astype(np.int64)[None, :].repeat(count, 0)
        return {"input_ids": ids, "token_type_ids": types}

    calib, evaluation = tokens(32), tokens(64)
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    y = session.run(None, evaluation)[0].argmax(axis=1).astype(np.int64)
    np.savez(directory / "calib.npz", ids=calib["input_ids"], types=calib["token_type_ids"])
    np.savez(directory / "eval.npz", ids=evaluation["input_ids"], types=evaluation["token_type_ids"], y=y)


def token_spec(space: dict[str, object], max_trials: int = 4) -> dict[str, object]:
    """A spec over the tiny transformer with the given ``space``."""
    inputs = {"input_ids": "ids", "token_type_ids": "types"}
    return {
        "study": {"name": "tiny-transformer", "seed": 0, "save_models": True},
        "model": "tiny_transformer.onnx",
        "data": {
            "calibration": {"path": "calib.npz", "inputs": inputs, "size": 32, "batch_size": 8},
            "evaluation": {"path": "eval.npz", "inputs": inputs, "labels": "y", "batch_size": 32},
        },
        "accuracy": {"metric": "top1"},
        "tuning": {"mode": "pareto", "accuracy_criterion": {"absolute": 0.5},
                   "exit_policy": {"max_trials": max_trials}},
        "measure": {"performance": {"batch_size": 1, "warmup": 2, "iterations": 10, "threads": 1}},
        "space": space,
    }
