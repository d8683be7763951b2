"""Weight-only (MatMulNBits) configs and knobs: normalised, conditional, stable keys, one table."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import optuna
import pytest
from tiny_transformer import build_tiny_transformer

from quantuna.config import QuantConfig
from quantuna.errors import SpecError, TrialError
from quantuna.model import inspect_model
from quantuna.ort import weight_only
from quantuna.ort._capture import captured
from quantuna.space import SearchSpace
from quantuna.spec import SpaceSection

WO = {"approach": "weight_only", "op_types": ["MatMul"], "weight_symmetric": True, "bits": 4,
      "block_size": 32, "accuracy_level": 4, "algorithm": "RTN"}


@pytest.fixture()
def block(tmp_path: Path) -> Path:
    return build_tiny_transformer(tmp_path / "block.onnx")


def _space(block: Path, **knobs: object) -> SearchSpace:
    return SearchSpace(SpaceSection(**knobs), inspect_model(block), 32)


def test_a_weight_only_config_round_trips_and_older_keys_do_not_change() -> None:
    config = QuantConfig.from_dict(WO)
    assert QuantConfig.from_dict(config.to_dict()) == config
    assert "int4" in config.summary() and "b32" in config.summary()
    dynamic = QuantConfig(approach="dynamic", types="U8S8", op_types=("MatMul",),
                          per_channel=False, reduce_range=False, weight_symmetric=True)
    # the new fields are None elsewhere, so they never enter an older config's key
    assert set(dynamic.to_dict()) == {"approach", "types", "op_types", "per_channel",
                                      "reduce_range", "weight_symmetric"}


@pytest.mark.parametrize(("change", "message"), [
    ({"calibrate_method": "MinMax"}, "does not apply to weight-only"),
    ({"per_channel": True}, "does not apply to weight-only"),
    ({"block_size": None}, "block_size: a weight_only config needs it"),
    ({"op_types": ["Conv"]}, "weight-only quantization takes Gather or MatMul"),
    ({"op_types": ["Gather"], "bits": 8}, "Gather takes 4 bits only"),
    ({"block_size": 48}, "block_size"),
])
def test_weight_only_combinations_quantuna_never_writes_are_refused(change: dict, message: str) -> None:
    data = {k: v for k, v in {**WO, **change}.items() if v is not None}
    with pytest.raises(SpecError, match=message):
        QuantConfig.from_dict(data)


def test_bits_block_size_are_refused_outside_weight_only() -> None:
    data = {"approach": "dynamic", "types": "U8S8", "op_types": ["MatMul"], "bits": 4}
    with pytest.raises(SpecError, match="bits: applies to weight_only quantization only"):
        QuantConfig.from_dict(data)


def test_weight_only_asks_its_own_knobs_and_no_calibration_or_activation_knob(block: Path) -> None:
    space = _space(block, approach=["static", "weight_only"], bits=[4, 8], block_size=[32, 128],
                   per_channel=[False, True], calibrate_method=["MinMax", "Entropy"],
                   op_types={"MatMul": ["int8"], "Gather": ["int8", "fp32"]})
    wo = [(p, c) for p, c in space.enumerate() if c.approach == "weight_only"]
    assert wo and all(c.calibration_setting is None for _, c in wo)
    assert all(not {"per_channel", "calibrate_method", "types", "quant_format"} & set(p) for p, _ in wo)
    assert {c.bits for _, c in wo} == {4, 8} and {c.block_size for _, c in wo} == {32, 128}
    # onnxruntime quantizes Gather at 4 bits only: at 8 bits the config says MatMul only
    assert all(c.op_types == ("MatMul",) for _, c in wo if c.bits == 8)
    assert any(c.op_types == ("Gather", "MatMul") for _, c in wo if c.bits == 4)


def test_weight_only_alone_defaults_to_the_matmul_knob_and_skips_ops_it_cannot_take(block: Path) -> None:
    assert list(_space(block, approach=["weight_only"]).op_knobs) == ["MatMul"]
    space = _space(block, approach=["weight_only"], op_types={"Add": ["int8"], "MatMul": ["fp32"]})
    trial = optuna.trial.FixedTrial({})
    assert space.suggest(trial) == QuantConfig()  # nothing it can quantize: the fp32 model


def test_weight_only_is_offered_only_with_an_op_type_it_takes(block: Path) -> None:
    space = _space(block, approach=["dynamic", "weight_only"],
                   op_types={"MatMul": ["int8", "fp32"], "Add": ["int8", "fp32"]})
    for params, config in space.enumerate():
        if params.get("op.MatMul") == "fp32":
            assert config.approach != "weight_only"


def test_importing_the_quantizer_leaves_the_root_logger_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    monkeypatch.delitem(sys.modules, weight_only._MODULE, raising=False)
    try:
        weight_only.load_quantizer()  # it calls logging.basicConfig(level=INFO) when imported
    except TrialError:
        pytest.skip("onnx-ir is not installed")
    assert (list(root.handlers), root.level) == before


def test_a_missing_package_of_the_quantizer_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weight_only, "_MODULE", "quantuna_no_such_module_xyz")
    with pytest.raises(TrialError, match="pip install onnx-ir"):
        weight_only.load_quantizer()


def test_records_of_onnxruntimes_named_loggers_go_to_quantunas_debug_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG), captured("test"):
        logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").warning("loud")
        logging.getLogger("neural_compressor").warning("louder")
    mine = [(r.name, r.levelno) for r in caplog.records]
    assert ("quantuna.ort", logging.DEBUG) in mine
    assert all(name == "quantuna.ort" for name, _ in mine)
    assert logging.getLogger("onnxruntime").propagate  # restored


def test_records_of_loggers_named_by_bare_module_inside_onnxruntime_are_captured(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import onnxruntime

    record = logging.LogRecord("fusion_attention", logging.WARNING,
                               str(Path(onnxruntime.__file__).parent / "transformers" / "x.py"), 1,
                               "Failed to detect num_heads", None, None)
    with caplog.at_level(logging.DEBUG), captured("test"):
        logging.getLogger("fusion_attention").handle(record)
    assert [(r.name, r.levelno) for r in caplog.records] == [("quantuna.ort", logging.DEBUG)]


def test_weight_only_nodes_count_as_low_bit_computation(block: Path, tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    pytest.importorskip("onnx_ir")
    from quantuna.ort.quantize import quantize

    config = QuantConfig.from_dict({**WO, "op_types": ["Gather", "MatMul"]})
    out = quantize(inspect_model(block), config, tmp_path / "wo.onnx")
    nodes = weight_only.low_bit_nodes(onnx.load(str(out)))
    assert len(nodes) == 9  # 7 MatMuls with a constant weight, 2 embedding Gathers
    assert weight_only.low_bit_nodes(onnx.load(str(block))) == []
    qdq = helper.make_graph(
        [helper.make_node("DequantizeLinear", ["w4", "s"], ["w"], name="dq")], "g", [],
        [helper.make_tensor_value_info("w", TensorProto.FLOAT, [2])],
        [helper.make_tensor("w4", TensorProto.INT4, [2], [1, -1]), helper.make_tensor("s", TensorProto.FLOAT, [], [0.5])])
    assert weight_only.low_bit_nodes(helper.make_model(qdq)) == ["dq"]


def test_without_any_handler_onnxruntimes_records_do_not_reach_the_last_resort(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import onnxruntime

    record = logging.LogRecord("fusion_attention", logging.WARNING,
                               str(Path(onnxruntime.__file__).parent / "transformers" / "x.py"), 1,
                               "Failed to detect num_heads", None, None)
    assert logging.lastResort is not None
    with captured("test"):
        logging.lastResort.handle(record)  # where a library user's records go with no handler
    assert "num_heads" not in capsys.readouterr().err
    logging.lastResort.handle(record)  # outside the block it prints, as Python does
    assert "num_heads" in capsys.readouterr().err
