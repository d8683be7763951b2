"""Real signatures: RNN state and a sample rate fed unchanged (constants), samples on axis 1
(batch_axis), and validate running one real batch so it fails where run would."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ROOT, tiny_spec, write_spec
from onnx import TensorProto, helper, numpy_helper

from quantuna.errors import SpecError
from quantuna.spec import load_spec
from quantuna.study.run import run_study
from quantuna.study.session import prepare

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
HIDDEN = 8


def vad_like(path: Path) -> Path:
    """A voice-activity LSTM: a chunk x [batch, 16], state h, c [1, 1, 8], a scalar int64 sr."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (1, 4 * HIDDEN, 16)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(0, 0.3, (1, 4 * HIDDEN, HIDDEN)).astype(np.float32), "R"),
        numpy_helper.from_array(rng.normal(0, 0.3, (HIDDEN, 2)).astype(np.float32), "fc"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array(16000.0, np.float32), "sr_ref"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "axis0"], ["seq"], name="seq"),
        helper.make_node("LSTM", ["seq", "W", "R", "", "", "h", "c"], ["", "h_out", "c_out"],
                         name="lstm", hidden_size=HIDDEN),
        helper.make_node("Squeeze", ["h_out", "axis0"], ["h2"], name="squeeze"),
        helper.make_node("MatMul", ["h2", "fc"], ["raw"], name="fc"),
        helper.make_node("Cast", ["sr"], ["srf"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Div", ["srf", "sr_ref"], ["scale"], name="div"),
        helper.make_node("Mul", ["raw", "scale"], ["logits"], name="mul"),
    ]
    graph = helper.make_graph(nodes, "vad", [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16]),
        helper.make_tensor_value_info("sr", TensorProto.INT64, []),
        helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 1, HIDDEN]),
        helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 1, HIDDEN]),
    ], [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _vad_dir(directory: Path) -> dict:
    import onnxruntime as ort

    model = vad_like(directory / "vad.onnx")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (30, 16)).astype(np.float32)
    h0 = np.zeros((1, 1, HIDDEN), np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = np.concatenate([sess.run(None, {"x": x[i:i + 1], "sr": np.array(16000), "h": h0, "c": h0})[0]
                        for i in range(len(x))])
    np.savez(directory / "vad.npz", x=x, h0=h0, y=y)
    source = {"path": "vad.npz", "inputs": {"x": "x"}, "constants": {"h": "h0", "c": "h0", "sr": 16000}}
    spec = tiny_spec(directory, model="vad.onnx", accuracy={"metric": "cosine"},
                     space={"approach": ["dynamic"]})
    spec["data"] = {"calibration": dict(source), "evaluation": {**source, "labels": "y"}}
    spec["tuning"]["accuracy_criterion"] = {"absolute": 0.5}
    return spec


def test_rnn_state_and_a_scalar_sample_rate_are_fed_unchanged_to_every_batch(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path, _vad_dir(tmp_path), "vad.yaml")
    session = prepare(load_spec(spec_path))
    batch, labels = next(session.evaluation.batches(session.eval_batch_size))
    assert batch["x"].shape == (1, 16) and batch["h"].shape == (1, 1, HIDDEN)
    assert batch["sr"].shape == () and batch["sr"].dtype == np.int64 and int(batch["sr"]) == 16000
    assert len(session.evaluation) == 30 and labels is not None and labels.shape == (1, 2)
    result = run_study(spec_path, n_trials=3)
    assert result.baseline["values"]["accuracy"] == pytest.approx(1.0)
    quantized = [t for t in result.study.trials if t.user_attrs.get("int8_ops")]
    assert quantized and not result.failed
    assert any("DynamicQuantizeLSTM" in t.user_attrs["int8_op_types"] or
               "MatMulInteger" in t.user_attrs["int8_op_types"] for t in quantized)


def test_a_constant_that_cannot_fit_is_one_line_naming_the_file_input_and_shapes(tmp_path: Path) -> None:
    spec = _vad_dir(tmp_path)
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 16), np.float32), h0=np.zeros((1, 1, 4), np.float32))
    spec["data"]["calibration"]["path"] = "bad.npz"
    with pytest.raises(SpecError) as err:
        prepare(load_spec(write_spec(tmp_path, spec, "vad.yaml")))
    message = str(err.value)
    assert "\n" not in message and "bad.npz" in message and "'h'" in message
    assert "(1, 1, 4)" in message and "[1, 1, 8]" in message


def _state_model(path: Path) -> Path:
    """An input whose samples lie on axis 1: state [2, batch, 8] -> mean over axis 0 -> MatMul."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("ReduceMean", ["state"], ["m"], name="mean", axes=[0], keepdims=0),
             helper.make_node("MatMul", ["m", "w"], ["logits"], name="mm")]
    graph = helper.make_graph(nodes, "state", [helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "b", 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_a_state_batched_on_axis_1_is_sliced_on_that_axis(tmp_path: Path) -> None:
    import onnxruntime as ort

    model = _state_model(tmp_path / "state.onnx")
    s = np.random.default_rng(2).normal(0, 1, (2, 40, 8)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"state": s})[0]
    np.savez(tmp_path / "state.npz", s=s, y=y.argmax(1))
    source = {"path": "state.npz", "inputs": {"state": {"key": "s", "batch_axis": 1}}, "batch_size": 10}
    spec = tiny_spec(tmp_path, model="state.onnx", space={"approach": ["static"]})
    spec["data"] = {"calibration": dict(source), "evaluation": {**source, "labels": "y"}}
    spec["study"]["save_models"] = True
    path = write_spec(tmp_path, spec, "state.yaml")
    session = prepare(load_spec(path))
    assert len(session.calibration) == 40
    batch = next(session.calibration.batches(10))[0]
    assert batch["state"].shape == (2, 10, 8)
    result = run_study(path, n_trials=3)
    assert result.baseline["values"]["accuracy"] == 1.0 and not result.failed
    # the export names the input's batch axis; apply calibrates the same way, byte for byte
    from quantuna.export import ExportedConfig, apply, export_trial, file_sha256, write_export
    from quantuna.study.run import load_results

    trial = next(t for t in result.trials if not t.config.is_fp32)
    document = export_trial(load_results(path), trial=trial.number)
    assert document["calibration"]["inputs"] == {"state": {"key": "s", "batch_axis": 1}}
    write_export(document, tmp_path / "best.yaml")
    apply(ExportedConfig.read(tmp_path / "best.yaml"), tmp_path / "state.onnx", out=tmp_path / "re.onnx")
    assert file_sha256(tmp_path / "re.onnx") == trial.model_sha256
    # without batch_axis axis 0 holds 2 "samples": the 40 labels do not match them
    spec["data"]["evaluation"]["inputs"] = {"state": "s"}
    with pytest.raises(SpecError, match=r"data\.evaluation\.labels: 40 labels for 2 samples"):
        prepare(load_spec(write_spec(tmp_path, spec, "state.yaml")))


def test_validate_runs_one_real_batch_and_fails_where_run_would(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 3)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["logits"], name="mm")], "sym",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "k"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["b", 3])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "sym.onnx"))
    x = rng.normal(0, 1, (20, 5)).astype(np.float32)  # k = 5 fits the signature, not the weight
    np.savez(tmp_path / "sym.npz", x=x, y=np.zeros(20, np.int64))
    spec = tiny_spec(tmp_path, model="sym.onnx", space={})
    spec["data"] = {"calibration": {"path": "sym.npz", "inputs": {"x": "x"}},
                    "evaluation": {"path": "sym.npz", "inputs": {"x": "x"}, "labels": "y"}}
    path = write_spec(tmp_path, spec, "sym.yaml")
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-m", "quantuna.cli", "validate", str(path)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "data.calibration: the fp32 model cannot run one batch" in lines[0]
    assert "x [20, 5] float32" in lines[0] or "x [" in lines[0]
    assert not (tmp_path / "sym.db").exists()  # nothing written


def test_a_file_onnxruntime_cannot_load_is_one_line_naming_it(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], name="mystery", domain="example.custom")], "bad",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.custom", 1)])
    model.ir_version = 8
    onnx.save(model, str(tmp_path / "bad.onnx"))
    np.savez(tmp_path / "bad.npz", x=np.zeros((8, 4), np.float32), y=np.zeros(8, np.int64))
    spec = tiny_spec(tmp_path, model="bad.onnx", space={})
    spec["data"] = {"calibration": {"path": "bad.npz"}, "evaluation": {"path": "bad.npz", "labels": "y"}}
    with pytest.raises(SpecError) as err:
        prepare(load_spec(write_spec(tmp_path, spec, "bad.yaml")))
    message = str(err.value)
    assert "\n" not in message and "bad.onnx" in message
    assert "onnxruntime cannot run" in message or "not a valid ONNX model" in message


def test_the_latency_loops_batch_is_run_once_too(tmp_path: Path) -> None:
    spec = _vad_dir(tmp_path)  # the model fixes its batch to 1
    spec["measure"]["performance"]["batch_size"] = 4
    with pytest.raises(SpecError, match=r"measure\.performance\.batch_size 4: the fp32 model cannot run one batch"):
        prepare(load_spec(write_spec(tmp_path, spec, "vad.yaml")))


def test_a_dynamic_lstm_pick_exports_and_applies_byte_for_byte(tmp_path: Path) -> None:
    """LSTM is quantized by onnxruntime's dynamic (integer-op) registry only: apply must accept
    an exported config naming it (it refused: "neither an op type onnxruntime quantizes")."""
    import quantuna
    from quantuna.export import export_trial, file_sha256, write_export

    spec = _vad_dir(tmp_path)
    spec["space"]["op_types"] = {"LSTM": ["int8"], "MatMul": ["fp32"]}
    result = run_study(write_spec(tmp_path, spec, "vad.yaml"), n_trials=2)
    lstm = next(t for t in result.trials if "LSTM" in t.config.op_types)
    path = write_export(export_trial(result, trial=lstm.number, allow_infeasible=True), tmp_path / "pick.yaml")
    out = tmp_path / "rebuilt.onnx"
    quantuna.apply(path, out=out)
    assert file_sha256(out) == lstm.model_sha256
