"""Model preparation: a file as shipped (nameless Constant weights at opset 11, per-channel in the
space) is prepared once, studied honestly, and rebuilt byte for byte by apply."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from conftest import tiny_spec, write_spec
from onnx import TensorProto, helper, numpy_helper

from quantuna.errors import SpecError
from quantuna.export import apply, export_trial, file_sha256
from quantuna.model import default_opset, inspect_model
from quantuna.ort.prepare import PrepareSettings, prepare_model
from quantuna.spec import load_spec
from quantuna.study.run import load_results, run_study
from quantuna.study.session import prepare

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def _constant(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(array, name))


def paddle_like(path: Path, opset: int = 11) -> Path:
    """What paddle2onnx writes: weights in unnamed Constant nodes, no node names, an old opset."""
    rng = np.random.default_rng(0)
    nodes = [
        _constant("w1", rng.normal(0, 0.5, (8, 1, 3, 3)).astype(np.float32)),
        _constant("b1", rng.normal(0, 0.1, (8,)).astype(np.float32)),
        _constant("w2", rng.normal(0, 0.1, (128, 3)).astype(np.float32)),
        _constant("b2", np.zeros(3, np.float32)),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Flatten", ["r1"], ["f1"]),
        helper.make_node("MatMul", ["f1", "w2"], ["m1"]),
        helper.make_node("Add", ["m1", "b2"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "paddle", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 4, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def _spec(directory: Path, **space: object) -> Path:
    import onnxruntime as ort

    model = paddle_like(directory / "paddle.onnx")
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (40, 1, 4, 4)).astype(np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.savez(directory / "calib.npz", x=x[:20])
    np.savez(directory / "eval.npz", x=x, y=sess.run(None, {"x": x})[0].argmax(1))
    spec = tiny_spec(directory, model="paddle.onnx", space={
        "approach": ["static"], "quant_format": ["QDQ"], "per_channel": [True],
        "op_types": {"Conv": ["int8"], "Gemm": ["int8"]}, **space})  # MatMul+Add fuse
    spec["data"]["calibration"].update(size=20)
    spec["study"]["save_models"] = True
    return write_spec(directory, spec, "paddle.yaml")


def test_nameless_constant_weights_at_opset_11_are_prepared_and_quantized_per_channel(
    tmp_path: Path,
) -> None:
    spec_path = _spec(tmp_path)
    session = prepare(load_spec(spec_path))
    applied = " | ".join(session.preparation.applied)  # type: ignore[union-attr]
    assert "4 Constant weights made initializers" in applied
    assert "opset 11 -> 13" in applied and "unnamed nodes named" in applied
    assert "quant_pre_process" in applied
    prepared = onnx.load(str(session.model.path))
    assert default_opset(prepared) == 13 and all(n.name for n in prepared.graph.node)
    assert not [n for n in prepared.graph.node if n.op_type == "Constant"]
    assert session.model.compute_nodes  # nodes can now be kept in fp32 by name
    result = run_study(spec_path, n_trials=2)
    trial = next(t for t in result.trials if not t.config.is_fp32)
    assert trial.config.per_channel and trial.config.quant_format == "QDQ"
    # a valid model (DequantizeLinear has its axis at opset 13) whose weights are int8
    # initializers, not Constant nodes quantization would leave in float beside a copy
    quantized = onnx.load(str(tmp_path / "paddle.quantuna" / "models" / f"{trial.config.key()}.onnx"))
    assert not [n for n in quantized.graph.node if n.op_type == "Constant"]
    int8 = [i for i in quantized.graph.initializer if i.data_type == TensorProto.INT8]
    assert len(int8) >= 2 and not [i for i in quantized.graph.initializer
                                   if i.data_type == TensorProto.FLOAT and i.name in ("w1", "w2")]
    assert result.study.trials[trial.number].user_attrs["int8_ops"] >= 2
    stored = result.study.user_attrs["preparation"]
    assert stored["sha256"] == session.model.sha256 and stored["applied"] == list(session.preparation.applied)  # type: ignore[union-attr]
    # the export records the preparation; apply redoes it and rebuilds the same bytes
    document = export_trial(load_results(spec_path), trial=trial.number)
    assert document["provenance"]["preparation"]["settings"]["needs_opset"] == 13
    assert document["provenance"]["source_model"]["sha256"] == file_sha256(tmp_path / "paddle.onnx")
    from quantuna.export import ExportedConfig, write_export

    write_export(document, tmp_path / "best.yaml")
    out = tmp_path / "rebuilt.onnx"
    apply(ExportedConfig.read(tmp_path / "best.yaml"), tmp_path / "paddle.onnx", out=out)
    assert file_sha256(out) == trial.model_sha256


def test_preparation_is_cached_per_sha256_and_settings_and_a_torn_entry_is_rebuilt(
    tmp_path: Path,
) -> None:
    model = paddle_like(tmp_path / "m.onnx")
    cache = tmp_path / "cache"
    first = prepare_model(model, PrepareSettings(), cache)
    again = prepare_model(model, PrepareSettings(), cache)
    assert again.path == first.path and again.applied == first.applied
    other = prepare_model(model, PrepareSettings(preprocess="off", opset="keep"), cache)
    assert other.path != first.path and default_opset(onnx.load(str(other.path))) == 11
    assert not any("quant_pre_process" in a for a in other.applied)
    first.path.write_bytes(first.path.read_bytes()[:100])  # a torn file is never trusted
    rebuilt = prepare_model(model, PrepareSettings(), cache)
    assert rebuilt.sha256 == first.sha256 and file_sha256(rebuilt.path) == first.sha256
    assert not list(cache.glob("prepare-*"))  # no temporary left behind


def test_a_failed_opset_upgrade_takes_per_channel_qdq_out_of_the_space_with_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnx import version_converter

    def fails(model: onnx.ModelProto, target: int) -> onnx.ModelProto:
        raise RuntimeError("no adapter for Foo")

    monkeypatch.setattr(version_converter, "convert_version", fails)
    spec_path = _spec(tmp_path, quant_format=["QDQ", "QOperator"], per_channel=[False, True])
    session = prepare(load_spec(spec_path))
    assert default_opset(onnx.load(str(session.model.path))) == 11
    failed = [n for n in session.notes if "opset 11 -> 13 failed" in n]
    assert len(failed) == 1 and "per-channel QDQ" in failed[0]
    configs = session.space.distinct_configs()
    assert not [c for c in configs if c.quant_format == "QDQ" and c.per_channel]
    assert [c for c in configs if c.quant_format == "QOperator" and c.per_channel]
    result = run_study(spec_path, n_trials=3)
    assert not result.failed


def test_explicit_settings_that_cannot_be_applied_are_spec_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from onnx import version_converter

    monkeypatch.setattr(version_converter, "convert_version",
                        lambda m, t: (_ for _ in ()).throw(RuntimeError("no adapter")))
    model = paddle_like(tmp_path / "m.onnx")
    with pytest.raises(SpecError, match=r"prepare\.opset: 11 -> 14 failed .*no adapter"):
        prepare_model(model, PrepareSettings(opset=14), tmp_path / "cache")


def test_a_model_is_never_refused_for_unnamed_nodes(tmp_path: Path) -> None:
    info = inspect_model(paddle_like(tmp_path / "m.onnx"))
    assert info.opset == 11 and "Conv" in info.op_types


def test_preprocess_auto_falls_back_and_says_what_it_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import onnxruntime.quantization.shape_inference as si

    real = si.quant_pre_process
    calls: list[tuple[bool, bool]] = []

    def symbolic_fails(src: str, dst: str, *, skip_optimization: bool, skip_symbolic_shape: bool) -> None:
        calls.append((skip_symbolic_shape, skip_optimization))
        if not skip_symbolic_shape:
            raise AssertionError("Incomplete symbolic shape inference")
        real(src, dst, skip_optimization=skip_optimization, skip_symbolic_shape=True)

    monkeypatch.setattr(si, "quant_pre_process", symbolic_fails)
    prepared = prepare_model(paddle_like(tmp_path / "m.onnx"), PrepareSettings(), tmp_path / "c")
    assert calls[:2] == [(False, False), (True, False)]
    assert any(a.startswith("quant_pre_process without symbolic shape inference (AssertionError")
               for a in prepared.applied)
    with pytest.raises(SpecError, match="prepare.preprocess: quant_pre_process failed"):
        prepare_model(tmp_path / "m.onnx", PrepareSettings(preprocess="on"), tmp_path / "c2")
    assert optuna  # (the module is imported for the warnings filter)


def test_concurrent_preparations_of_one_model_run_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    import quantuna.ort.prepare as prep

    model = paddle_like(tmp_path / "m.onnx")
    real = prep._prepare
    runs: list[int] = []

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(1)
        time.sleep(0.3)  # the other worker arrives while this one prepares
        return real(*args, **kwargs)

    monkeypatch.setattr(prep, "_prepare", slow)
    results: list[object] = []
    workers = [threading.Thread(target=lambda: results.append(
        prepare_model(model, PrepareSettings(preprocess="off"), tmp_path / "cache"))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(runs) == 1 and len(results) == 2
    assert results[0].sha256 == results[1].sha256  # type: ignore[attr-defined]
