"""Build the shipped example study's model and data: a small CNN on scikit-learn's digits.

The outputs of this script are committed, so running it is only needed to rebuild them:

    pip install torch==2.13.0 scikit-learn onnx onnxruntime
    python studies/train_digits.py

It writes, relative to this file:

- ``models/digits_cnn.onnx``: fp32 CNN, opset 17, input ``input`` float32 [batch, 1, 8, 8]
  (pixels in [0, 1]), output ``logits`` float32 [batch, 10]; pre-processed with
  onnxruntime's ``quant_pre_process`` and with a unique name on every node.
- ``data/digits_calib.npz``: key ``x``, 200 float32 samples taken from the training split.
- ``data/digits_eval.npz``: keys ``x`` (float32, ~500 held-out samples) and ``y`` (int64 labels).

and prints the fp32 top-1 on the evaluation set, measured with onnxruntime on the written file.

The data is ``sklearn.datasets.load_digits`` (1797 8x8 images, shipped with scikit-learn, no
download). Everything is seeded (seed 0) and training is deterministic on CPU; it takes well
under a minute on two cores.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

SEED = 0
N_EVAL = 500
N_CALIB = 200
EPOCHS = 30
BATCH = 64
OPSET = 17

HERE = Path(__file__).resolve().parent
MODEL_PATH = HERE / "models" / "digits_cnn.onnx"
CALIB_PATH = HERE / "data" / "digits_calib.npz"
EVAL_PATH = HERE / "data" / "digits_eval.npz"


class DigitsCNN(nn.Module):
    """Conv(1->32) ReLU, Conv(32->64) ReLU, MaxPool 2x2, Flatten, Linear(1024->128) ReLU, Linear(128->10)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def load_split() -> tuple[np.ndarray, ...]:
    """Digits scaled to [0, 1] as (N, 1, 8, 8) float32; seeded train/eval split and calibration subset."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_train, x_eval, y_train, y_eval = train_test_split(
        x, y, test_size=N_EVAL, random_state=SEED, stratify=y
    )
    rng = np.random.default_rng(SEED)
    calib_idx = rng.choice(len(x_train), size=N_CALIB, replace=False)
    x_calib = np.ascontiguousarray(x_train[np.sort(calib_idx)])
    return x_train, y_train, x_calib, x_eval, y_eval


def train(x_train: np.ndarray, y_train: np.ndarray) -> nn.Module:
    torch.manual_seed(SEED)
    torch.use_deterministic_algorithms(True)
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = torch.from_numpy(x_train), torch.from_numpy(y_train)
    gen = torch.Generator().manual_seed(SEED)
    model.train()
    for epoch in range(EPOCHS):
        perm = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(xt), BATCH):
            idx = perm[i : i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(xt):.4f}")
    model.eval()
    return model


def export_onnx(model: nn.Module, path: Path) -> None:
    """Export with the legacy (TorchScript) exporter, pre-process for quantization, name every node."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "raw.onnx")
        # The legacy exporter is chosen on purpose (no onnxscript needed); silence its notice.
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            raw,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
        pre = os.path.join(tmp, "pre.onnx")
        quant_pre_process(raw, pre, skip_symbolic_shape=False)
        m = onnx.load(pre)

    # Every node gets a unique, non-empty name (quantization exclusion lists refer to them).
    seen: set[str] = set()
    for i, node in enumerate(m.graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)
    # quant_pre_process's optimizer declares every domain it knows; keep only those in use.
    used = {node.domain for node in m.graph.node} | {""}
    keep = [o for o in m.opset_import if o.domain in used]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    m.doc_string = "Small CNN on sklearn digits (8x8, pixels in [0,1]); see studies/train_digits.py"
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, str(path))


def onnx_top1(path: Path, x: np.ndarray, y: np.ndarray, batch: int = 64) -> float:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    correct = 0
    for i in range(0, len(x), batch):
        (logits,) = sess.run(["logits"], {"input": x[i : i + batch]})
        correct += int((logits.argmax(axis=1) == y[i : i + batch]).sum())
    return correct / len(x)


def main() -> None:
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    x_train, y_train, x_calib, x_eval, y_eval = load_split()
    print(f"train {len(x_train)}  calib {len(x_calib)} (from train)  eval {len(x_eval)}")
    model = train(x_train, y_train)
    export_onnx(model, MODEL_PATH)
    CALIB_PATH.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(CALIB_PATH, x=x_calib)
    np.savez_compressed(EVAL_PATH, x=x_eval, y=y_eval)
    for p in (MODEL_PATH, CALIB_PATH, EVAL_PATH):
        print(f"wrote {p.relative_to(HERE.parent)}  {p.stat().st_size} bytes")
    print(f"fp32 eval top-1 (onnxruntime): {onnx_top1(MODEL_PATH, x_eval, y_eval):.4f}")


if __name__ == "__main__":
    main()
