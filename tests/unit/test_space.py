"""The search space: conditional knobs, normalised configs, enumeration, rejected pairs excluded."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import optuna
import pytest
from conftest import tiny_spec, write_spec

from quantuna.config import QuantConfig
from quantuna.errors import SpecError
from quantuna.model import inspect_model
from quantuna.space import SearchSpace
from quantuna.spec import SpaceSection, load_spec


def _space(tiny_dir: Path, **knobs: object) -> SearchSpace:
    return SearchSpace(SpaceSection(**knobs), inspect_model(tiny_dir / "tiny.onnx"), 40)


def test_all_fp32_is_the_fp32_config_and_asks_nothing_else(tiny_dir: Path) -> None:
    space = _space(tiny_dir, approach=["static", "dynamic"])
    trial = optuna.trial.FixedTrial({"op.Conv": "fp32", "op.Gemm": "fp32"})
    assert space.suggest(trial) == QuantConfig()


def test_dynamic_configs_carry_no_calibration_knob(tiny_dir: Path) -> None:
    space = _space(tiny_dir, approach=["static", "dynamic"], calibrate_method=["MinMax", "Entropy"])
    trial = optuna.trial.FixedTrial({"op.Conv": "int8", "op.Gemm": "fp32", "approach": "dynamic"})
    config = space.suggest(trial)
    assert config.approach == "dynamic" and config.calibrate_method is None
    assert config.calibration_setting is None and config.op_types == ("Conv",)


def test_percentile_is_asked_only_for_percentile_calibration(tiny_dir: Path) -> None:
    space = _space(tiny_dir, calibrate_method=["MinMax", "Percentile"], percentile=[99.9, 99.99])
    names = {frozenset(params) for params, _ in space.enumerate()}
    with_minmax = [p for p, c in space.enumerate() if c.calibrate_method == "MinMax"]
    assert all("percentile" not in p for p in with_minmax)
    assert any("percentile" in p for p in names)


def test_s8s8_is_never_a_dynamic_choice(tiny_dir: Path) -> None:
    space = _space(tiny_dir, approach=["static", "dynamic"], types=["U8S8", "S8S8"])
    dynamic = [c for _, c in space.enumerate() if c.approach == "dynamic"]
    assert dynamic and all(c.types == "U8S8" for c in dynamic)
    with pytest.raises(SpecError, match="dynamic quantization has uint8 activations only"):
        _space(tiny_dir, approach=["dynamic"], types=["S8S8"])


def test_enumeration_counts_every_distinct_config(tiny_dir: Path) -> None:
    space = _space(
        tiny_dir, approach=["static", "dynamic"], quant_format=["QDQ", "QOperator"],
        calibrate_method=["MinMax", "Entropy"],
    )
    # op knobs: 3 quantized subsets + fp32; per subset: static 2 formats x 2 methods + 1 dynamic
    assert len(space.distinct_configs()) == 3 * (2 * 2 + 1) + 1


def test_params_for_round_trips_through_optuna(tiny_dir: Path) -> None:
    space = _space(tiny_dir, approach=["static", "dynamic"], per_channel=[False, True])
    for params, config in space.enumerate():
        assert space.suggest(optuna.trial.FixedTrial(params)) == config
        assert space.suggest(optuna.trial.FixedTrial(space.params_for(config))) == config


def test_default_op_knobs_cover_the_model_compute_ops(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    del spec["space"]["op_types"]
    loaded = load_spec(write_spec(tiny_dir, spec))
    space = SearchSpace(loaded.space, inspect_model(loaded.model), 40)
    assert space.op_knobs == {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}


def test_config_round_trip_and_key() -> None:
    config = QuantConfig(approach="static", quant_format="QDQ", types="U8S8", per_channel=True,
                         calibrate_method="MinMax", calibration_size=10, op_types=("Gemm", "Conv"))
    assert config.op_types == ("Conv", "Gemm")
    again = QuantConfig.from_dict(config.to_dict())
    assert again == config and hash(again) == hash(config) and again.key() == config.key()
    assert QuantConfig.from_dict({"approach": "fp32"}).key() != config.key()
    with pytest.raises(SpecError, match="unknown key 'per_chanel'"):
        QuantConfig.from_dict({"per_chanel": True})


def test_the_default_space_offers_an_outlier_resistant_calibration(tiny_dir: Path) -> None:
    assert "MovingAverage" in SpaceSection().calibrate_method
    methods = {c.calibrate_method for _, c in _space(tiny_dir).enumerate() if c.approach == "static"}
    assert {"MinMax", "MovingAverage"} <= methods


def test_params_for_builds_a_config_once_without_enumerating_the_space(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = _space(tiny_dir, approach=["static", "dynamic"], per_channel=[False, True])
    configs = space.distinct_configs()

    def no_enumeration() -> None:
        raise AssertionError("the space was enumerated")

    monkeypatch.setattr(space, "enumerate", no_enumeration)
    direct = [space.params_for(c, search=False) for c in configs]
    assert all(p is not None for p in direct)  # every config of this space rebuilds from its values
    for params, config in zip(direct, configs):
        assert space.suggest(optuna.trial.FixedTrial(params)) == config
    outside = replace(configs[-1], calibration_size=12345)
    assert space.params_for(outside, search=False) is None  # not in the space
