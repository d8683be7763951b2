"""Transformer-shaped models: weight-only int4 (MatMulNBits) studies on a tiny block built with
onnx.helper (Gather embeddings, MatMul attention, Softmax, LayerNormalization, int64 inputs)."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import onnx
import pytest
from conftest import write_spec
from tiny_transformer import build_tiny_transformer, token_spec, write_token_data

import quantuna
from quantuna.export import export_trial, file_sha256, write_export
from quantuna.study.run import load_results, run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
needs_onnx_ir = pytest.mark.skipif(  # a dependency of quantuna; onnxruntime does not install it
    importlib.util.find_spec("onnx_ir") is None,
    reason="onnxruntime's MatMulNBits quantizer needs onnx-ir (pip install onnx-ir)")


@pytest.fixture()
def block_dir(tmp_path: Path) -> Path:
    model = build_tiny_transformer(tmp_path / "tiny_transformer.onnx")
    write_token_data(tmp_path, model)
    return tmp_path


@needs_onnx_ir
def test_a_weight_only_study_measures_matmulnbits_and_its_export_reapplies_byte_for_byte(
    block_dir: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    space = {"approach": ["weight_only"], "bits": [4], "block_size": [32, 64],
             "weight_symmetric": [True, False], "accuracy_level": [0, 4],
             "op_types": {"MatMul": ["int8"], "Gather": ["int8", "fp32"]}}
    path = write_spec(block_dir, token_spec(space, max_trials=4), "block.yaml")
    with caplog.at_level(logging.INFO):
        result = run_study(path, n_trials=4)
    quantized = [t for t in result.trials if not t.config.is_fp32]
    assert quantized and all(t.config.approach == "weight_only" for t in quantized)
    assert all(t.config.calibrate_method is None and t.config.types is None for t in quantized)
    assert not (block_dir / "block.quantuna" / "ranges").exists() or not any(
        (block_dir / "block.quantuna" / "ranges").iterdir())  # calibration-free
    # onnxruntime's INFO lines ("start to quantize ...") stay at debug level, on quantuna.ort
    assert not [r for r in caplog.records if r.name.startswith("onnxruntime")]
    trial = quantized[0]
    measured = block_dir / "block.quantuna" / "models" / f"{trial.config.key()}.onnx"
    ops = {n.op_type for n in onnx.load(str(measured)).graph.node}
    assert "MatMulNBits" in ops and "MatMul" in ops  # the activation x activation MatMuls stay
    assert file_sha256(measured) == trial.model_sha256
    exported = write_export(export_trial(load_results(path), trial=trial.number),
                            block_dir / "best.yaml")
    assert "block_size" in exported.read_text()
    quantuna.apply(exported, block_dir / "tiny_transformer.onnx", out=block_dir / "again.onnx")
    assert file_sha256(block_dir / "again.onnx") == trial.model_sha256


@needs_onnx_ir
def test_a_bert_fused_study_searches_the_fused_op_types_and_caches_the_fused_model(
    block_dir: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(block_dir / "cache"))
    space = {"approach": ["dynamic", "weight_only"], "graph_optimization": ["none", "bert"],
             "op_types": {"MatMul": ["int8"], "SkipLayerNormalization": ["fp32"]}}
    path = write_spec(block_dir, token_spec(space, max_trials=6), "fused.yaml")
    result = run_study(path, n_trials=6)
    fused = [t for t in result.trials if t.config.graph_optimization == "bert"]
    assert fused and all(t.config.approach in ("dynamic", "weight_only") for t in fused)
    entries = list((block_dir / "cache" / "quantuna" / "fused").glob("*.onnx"))
    assert len(entries) == 1  # one fusion, shared by every fused trial
    ops = {n.op_type for n in onnx.load(str(entries[0])).graph.node}
    assert {"SkipLayerNormalization", "EmbedLayerNormalization"} <= ops
    knobs = dict(quantuna_knobs(path))
    assert "op.SkipLayerNormalization" in knobs and knobs["graph_optimization"] == ["none", "bert"]
    trial = fused[0]
    exported = write_export(export_trial(load_results(path), trial=trial.number), block_dir / "f.yaml")
    quantuna.apply(exported, block_dir / "tiny_transformer.onnx", out=block_dir / "f.onnx")
    assert file_sha256(block_dir / "f.onnx") == trial.model_sha256


def quantuna_knobs(path: Path) -> list[tuple[str, list[object]]]:
    from quantuna.spec import load_spec
    from quantuna.study.session import prepare

    return prepare(load_spec(path)).space.knobs()


def test_a_static_study_on_the_block_records_the_calibration_peak_memory(block_dir: Path) -> None:
    space = {"approach": ["static"], "calibrate_method": ["MinMax", "Entropy"],
             "op_types": {"MatMul": ["int8"]}}
    path = write_spec(block_dir, token_spec(space, max_trials=3), "static.yaml")
    run_study(path, n_trials=3)
    study = load_results(path).study
    computed = [t for t in study.trials if t.user_attrs.get("calibration_reused") is False]
    assert computed and all(t.user_attrs["calibration_peak_mib"] >= 0 for t in computed)


def test_a_static_study_searches_smoothquant_and_its_export_reapplies_byte_for_byte(
    block_dir: Path,
) -> None:
    space = {"approach": ["static"], "smooth_quant": [True, False], "smooth_quant_alpha": [0.5, 0.8],
             "op_types": {"MatMul": ["int8"]}}
    path = write_spec(block_dir, token_spec(space, max_trials=5), "smooth.yaml")
    knobs = dict(quantuna_knobs(path))
    assert knobs["smooth_quant"] == [True, False] and knobs["smooth_quant_alpha"] == [0.5, 0.8]
    result = run_study(path, n_trials=5)
    smoothed = [t for t in result.trials if t.config.smooth_quant]
    assert smoothed and all(t.config.smooth_quant_alpha in (0.5, 0.8) for t in smoothed)
    assert all(t.config.smooth_quant_alpha is None for t in result.trials if not t.config.smooth_quant)
    trial = smoothed[0]
    measured = block_dir / "smooth.quantuna" / "models" / f"{trial.config.key()}.onnx"
    names = {n.name for n in onnx.load(str(measured)).graph.node}
    assert "h0_smooth_quant" in names  # the fp32 Mul before q/k/v (h0 also feeds the residual Add)
    exported = write_export(export_trial(load_results(path), trial=trial.number), block_dir / "s.yaml")
    assert "smooth_quant_alpha" in exported.read_text()
    quantuna.apply(exported, block_dir / "tiny_transformer.onnx", out=block_dir / "s.onnx")
    assert file_sha256(block_dir / "s.onnx") == trial.model_sha256
