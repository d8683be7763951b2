"""The driver scripts ``peers.py`` runs in each peer's own venv (NNCF, Neural Compressor 2.6).

Each driver is called as ``python driver.py MODEL CALIB_NPZ EVAL_NPZ OUT_ONNX RELATIVE_LOSS`` and
prints one JSON line: the answer's ``bytes`` and ``accuracy`` (re-measured on the saved file with
onnxruntime), ``evaluations`` (calls of the validation function, fp32's included), ``seconds``
(the tool's own call, its fp32 evaluation included; imports and the re-measure left out) and
``fp32_accuracy``. Both tools get the same data: calibration samples one by one (NNCF) or in
batches of 20 (INC, as the digits spec), evaluation in batches of 100, top-1 accuracy.
"""

from __future__ import annotations

COMMON = r'''
import json, os, sys, time
import numpy as np
import onnx
import onnxruntime as ort

model_path, calib_path, eval_path, out_path, loss = sys.argv[1:6]
loss = float(loss)
calib = np.load(calib_path)["x"].astype(np.float32)
data = np.load(eval_path)
images, labels = data["x"].astype(np.float32), data["y"]
calls = [0.0]  # evaluated samples / the evaluation set: full evaluations


def top1(model, batches=None):
    """Top-1 accuracy of an onnx model (a ModelProto or a path) on ``batches`` ((x, y) pairs;
    default: the whole evaluation set in batches of 100)."""
    if batches is None:
        batches = [(images[i:i + 100], labels[i:i + 100]) for i in range(0, len(images), 100)]
    raw = model if isinstance(model, str) else model.SerializeToString()
    session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    hits = total = 0
    for x, y in batches:
        hits += int((session.run(None, {name: x})[0].argmax(1) == y).sum())
        total += len(y)
    calls[0] += total / len(images)
    return hits / total


def report(seconds, fp32_accuracy):
    evaluations = round(calls[0], 2)
    print(json.dumps({"bytes": os.path.getsize(out_path), "accuracy": top1(out_path),
                      "evaluations": evaluations, "seconds": seconds,
                      "fp32_accuracy": fp32_accuracy}))
'''

NNCF = COMMON + r'''
import logging
import nncf

nncf.set_log_level(logging.ERROR)
model = onnx.load(model_path)
name = model.graph.input[0].name
calibration = nncf.Dataset([calib[i:i + 1] for i in range(len(calib))], lambda x: {name: x})
validation = nncf.Dataset([(images[i:i + 100], labels[i:i + 100]) for i in range(0, len(images), 100)],
                          lambda item: {name: item[0]})


def validate(model, dataset):
    return top1(model, list(dataset))


start = time.perf_counter()
quantized = nncf.quantize_with_accuracy_control(
    model, calibration, validation, validation_fn=validate, max_drop=loss,
    drop_type=nncf.DropType.RELATIVE, subset_size=len(calib))
seconds = time.perf_counter() - start
onnx.save(quantized, out_path)
fp32_accuracy = top1(model)
calls[0] -= 1.0
report(seconds, fp32_accuracy)
'''

INC = COMMON + r'''
import logging
from neural_compressor import PostTrainingQuantConfig, quantization
from neural_compressor.config import AccuracyCriterion, TuningCriterion

logging.getLogger("neural_compressor").setLevel(logging.ERROR)


class Loader:
    batch_size = 20

    def __iter__(self):
        for i in range(0, len(calib), self.batch_size):
            yield calib[i:i + self.batch_size], None


config = PostTrainingQuantConfig(
    approach="static",
    accuracy_criterion=AccuracyCriterion(criterion="relative", tolerable_loss=loss),
    tuning_criterion=TuningCriterion(strategy="basic", max_trials=100))
start = time.perf_counter()
quantized = quantization.fit(onnx.load(model_path), config, calib_dataloader=Loader(), eval_func=top1)
seconds = time.perf_counter() - start
quantized.save(out_path)
fp32_accuracy = top1(model_path)
calls[0] -= 1.0
report(seconds, fp32_accuracy)
'''

DRIVERS = {"nncf": NNCF, "inc": INC}
