"""quantuna inside the user's own Optuna code: StudyObjective on a study the user made, the joint
search calls, the study's pruner in weighted mode, and samplers of the user's own."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import optuna
import pytest
from conftest import tiny_spec, write_spec
from onnx import numpy_helper

import quantuna
from quantuna.errors import SpecError, TrialError
from quantuna.spec import load_spec

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
QUANTUNA_ATTRS = ("config", "config_key", "values", "relative", "constraint", "feasible", "seconds", "host")


def _samplers() -> dict[str, Any]:
    return {
        "tpe": lambda: optuna.samplers.TPESampler(seed=0),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=0),
        "random": lambda: optuna.samplers.RandomSampler(seed=0),
    }


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_the_objective_runs_a_user_made_study_like_quantuna_run(
    tiny_dir: Path, tiny_spec_path: Path, sampler: str
) -> None:
    objective = quantuna.StudyObjective(tiny_spec_path)
    assert objective.directions == ["maximize", "minimize", "minimize"]
    study = optuna.create_study(directions=objective.directions, sampler=_samplers()[sampler](),
                                storage=f"sqlite:///{tiny_dir / 'mine.db'}", study_name="mine")
    objective.prepare(study)
    assert study.metric_names == ["accuracy (top1)", "performance [ms]", "modelsize [MiB]"]
    assert study.user_attrs["spec"] == str(tiny_spec_path)
    baseline = study.user_attrs["baseline"]
    study.optimize(objective, n_trials=6)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 6
    for trial in complete:
        for key in QUANTUNA_ATTRS:
            assert key in trial.user_attrs, key
        assert trial.constraints["accuracy"] == pytest.approx(trial.user_attrs["constraint"])
        assert trial.system_attrs["constraints"] == [trial.user_attrs["constraint"]]
        assert trial.values == [trial.user_attrs["values"][n] for n in ("accuracy", "performance", "modelsize")]
    # the warm start went first, as with quantuna run; fp32 reuses the baseline
    assert complete[0].user_attrs["config"]["approach"] == "static"
    assert complete[1].user_attrs["reused_measurement_from"] == "baseline"
    assert complete[1].user_attrs["values"] == baseline["values"]
    # the range cache and the artifacts are the spec's
    assert list((tiny_dir / "tiny.quantuna" / "ranges").glob("*.json"))
    assert (tiny_dir / "tiny.quantuna" / "artifacts").is_dir()
    # results, pick, export and apply as with the CLI (the spec path comes from the study)
    result = quantuna.load_results(optuna.load_study(study_name="mine", storage=f"sqlite:///{tiny_dir / 'mine.db'}"))
    assert {t.number for t in result.trials} == {t.number for t in complete}
    best = result.best()
    document = quantuna.export_trial(result, trial=best.number)
    assert document["config"] == best.config.to_dict()
    assert document["provenance"]["study"] == "mine"  # the user's study, not the spec's
    assert document["provenance"]["storage"] == f"sqlite:///{tiny_dir / 'mine.db'}"
    assert result.session is not None
    model = quantuna.apply(best.config, tiny_dir / "tiny.onnx", calibration=result.session.calibration)
    assert isinstance(model, onnx.ModelProto)


def test_without_prepare_the_first_trial_measures_the_baseline(tiny_spec_path: Path) -> None:
    objective = quantuna.StudyObjective(tiny_spec_path)
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=1))
    study.optimize(objective, n_trials=3)
    assert "baseline" in study.user_attrs
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert all("values" in t.user_attrs for t in study.trials)
    result = objective.results(study)  # an in-memory study: the objective reads it back
    assert len(result.trials) == 3
    objective.write_note(study)  # what optuna-dashboard shows on the study's page
    from optuna_dashboard import get_note

    assert "Feasible Pareto set" in get_note(study) and "fp32 baseline" in get_note(study)


def test_a_study_with_other_directions_is_one_clear_error(tiny_spec_path: Path) -> None:
    objective = quantuna.StudyObjective(tiny_spec_path)
    study = optuna.create_study(direction="maximize")
    with pytest.raises(SpecError, match=r"has directions \['maximize'\].*create the study with directions="):
        objective.prepare(study)
    with pytest.raises(SpecError, match="has directions"):
        study.optimize(objective, n_trials=1)
    assert "baseline" not in study.user_attrs  # nothing measured for a study it cannot serve


def test_max_trials_callback_and_threads_share_one_objective(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"approach": ["static", "dynamic"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8"]}}
    objective = quantuna.StudyObjective(write_spec(tiny_dir, spec), warm_start=False)
    study = optuna.create_study(directions=objective.directions, sampler=optuna.samplers.RandomSampler(seed=0),
                                storage=f"sqlite:///{tiny_dir / 'mine.db'}")
    objective.prepare(study)
    study.optimize(objective, n_trials=50, n_jobs=2, callbacks=[optuna.study.MaxTrialsCallback(8, states=None)])
    trials = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert 8 <= len(study.trials) <= 9  # a thread may start one more before the callback stops it
    assert len(trials) == len(study.trials)
    # four configs at most: each quantized one measured once, the others reuse its values
    measured: dict[str, int] = {}
    for t in trials:
        source = t.user_attrs["reused_measurement_from"]
        if source is None:
            assert t.user_attrs["config_key"] not in measured
            measured[t.user_attrs["config_key"]] = t.number
        elif isinstance(source, int):
            assert study.trials[source].user_attrs["values"] == t.user_attrs["values"]
        assert len(t.values) == 3 and t.values[0] == t.user_attrs["values"]["accuracy"]


def _quantized_fails(model: onnx.ModelProto) -> float:
    if any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "QLinearConv")
           for n in model.graph.node):
        raise RuntimeError("this evaluation refuses int8 models")
    return 1.0


def test_a_failing_config_fails_its_trial_and_the_study_goes_on(tiny_spec_path: Path) -> None:
    objective = quantuna.StudyObjective(tiny_spec_path, eval_func=_quantized_fails)
    study = optuna.create_study(directions=objective.directions)
    objective.prepare(study)
    study.optimize(objective, n_trials=3)
    failed = study.get_trials(states=(optuna.trial.TrialState.FAIL,))
    assert len(study.trials) == 3 and failed
    assert all("refuses int8" in t.user_attrs["fail_reason"] for t in failed)
    strict = quantuna.StudyObjective(tiny_spec_path, eval_func=_quantized_fails, catch=False)
    other = optuna.create_study(directions=strict.directions)
    strict.prepare(other)  # the warm start's first config is int8
    with pytest.raises(TrialError, match="refuses int8"):
        other.optimize(strict, n_trials=1)


# --- the study's pruner in weighted mode ---------------------------------------------------------


def _weighted(tiny_dir: Path) -> Path:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["mode"] = "weighted"
    spec["data"]["evaluation"]["batch_size"] = 10  # six batches: five intermediate values
    return write_spec(tiny_dir, spec)


def test_a_median_pruner_stops_a_trial_during_its_accuracy_pass(tiny_dir: Path) -> None:
    objective = quantuna.StudyObjective(_weighted(tiny_dir), warm_start=False)
    assert objective.directions == ["maximize"]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.MedianPruner(n_startup_trials=1, n_warmup_steps=0))
    objective.prepare(study)
    # an earlier trial that was far better at every step: the median the pruner compares with
    study.add_trial(optuna.trial.create_trial(
        value=5.0, intermediate_values=dict.fromkeys(range(10, 60, 10), 5.0)))
    int8 = {"op.Conv": "int8", "op.Gemm": "int8", "approach": "dynamic"}
    study.enqueue_trial(int8)
    study.optimize(objective, n_trials=1)
    pruned = study.trials[-1]
    assert pruned.state == optuna.trial.TrialState.PRUNED
    assert "the study's pruner asked to stop" in pruned.user_attrs["prune_reason"]
    assert list(pruned.intermediate_values) == [10]  # stopped after the first batch
    assert 0 < pruned.intermediate_values[10] <= 1.0 + 1e-9  # accuracy as a ratio to fp32
    assert "timing" not in pruned.user_attrs["seconds"]  # the latency loop never ran
    assert "stop_reason" not in pruned.user_attrs  # not "hopeless": the same config may run again
    study.enqueue_trial(int8)
    study.optimize(objective, n_trials=1)
    assert study.trials[-1].user_attrs.get("reused_measurement_from") is None


def test_a_hyperband_pruner_works_on_the_reported_steps(tiny_dir: Path) -> None:
    objective = quantuna.StudyObjective(_weighted(tiny_dir))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=10, reduction_factor=2))
    objective.prepare(study)
    study.optimize(objective, n_trials=8)
    states = {t.state for t in study.trials}
    assert states <= {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    for t in study.get_trials(states=(optuna.trial.TrialState.PRUNED,)):
        assert "prune_reason" in t.user_attrs or "stop_reason" in t.user_attrs
    measured = [t for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
                if t.user_attrs["reused_measurement_from"] is None]
    assert measured and all(sorted(t.intermediate_values) == [10, 20, 30, 40, 50] for t in measured)


def test_quantuna_run_in_weighted_mode_neither_reports_nor_prunes(tiny_dir: Path) -> None:
    result = quantuna.tune(_weighted(tiny_dir), n_trials=4)
    assert isinstance(result.study.pruner, optuna.pruners.NopPruner)
    trials = result.study.trials
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert all(not t.intermediate_values for t in trials)


# --- joint search -----------------------------------------------------------------------------


def _prune(tiny_dir: Path, ratio: float, name: str = "") -> Path:
    model = onnx.load(str(tiny_dir / "tiny.onnx"))
    for init in model.graph.initializer:
        w = numpy_helper.to_array(init)
        if w.ndim > 1:
            w = np.where(np.abs(w) < np.quantile(np.abs(w), ratio), 0, w).astype(w.dtype)
            init.CopyFrom(numpy_helper.from_array(w, init.name))
    path = tiny_dir / f"pruned-{ratio}{name}.onnx"
    onnx.save(model, str(path))
    return path


def test_suggest_config_uses_the_clis_space_under_a_prefix(tiny_spec_path: Path) -> None:
    space = quantuna.search_space(tiny_spec_path)
    trial = optuna.trial.FixedTrial({"q.op.Conv": "int8", "q.op.Gemm": "fp32", "q.approach": "static",
                                     "q.calibrate_method": "MinMax", "q.quant_format": "QOperator"})
    config = quantuna.suggest_config(trial, space, prefix="q.")
    assert config.op_types == ("Conv",) and config.quant_format == "QOperator"
    same = space.build(lambda knob, values: trial.params["q." + knob])
    assert same == config
    assert trial.user_attrs["config_key"] == config.key()
    # conditional: all fp32 asks for nothing else
    fp32 = optuna.trial.FixedTrial({"q.op.Conv": "fp32", "q.op.Gemm": "fp32"})
    assert quantuna.suggest_config(fp32, tiny_spec_path, prefix="q.").is_fp32


def test_measure_outside_a_trial_reuses_the_baseline_and_earlier_measurements(tiny_spec_path: Path) -> None:
    space = quantuna.search_space(tiny_spec_path)
    config = space.default_int8()
    assert config is not None
    first = quantuna.measure(config, spec=tiny_spec_path)
    assert first.reused_from is None and set(first.measured) == {"accuracy", "performance", "modelsize"}
    assert first.values == [first.measured[n] for n in ("accuracy", "performance", "modelsize")]
    assert first.feasible == (first.constraint <= 0)
    assert first.relative["modelsize"] == pytest.approx(first.measured["modelsize"] / first.baseline["values"]["modelsize"])
    assert quantuna.measure(config, spec=tiny_spec_path).reused_from == "process"
    assert quantuna.measure(quantuna.QuantConfig(), spec=tiny_spec_path).reused_from == "baseline"


def test_measure_takes_the_users_data_for_the_baseline_and_the_trial(tiny_dir: Path, tiny_spec_path: Path) -> None:
    data = np.load(tiny_dir / "eval.npz")
    wrong = [({"x": data["x"][:30]}, (data["y"][:30] + 1) % 3)]  # never fp32's prediction
    result = quantuna.measure(quantuna.QuantConfig(), spec=tiny_spec_path, evaluation=wrong)
    assert result.reused_from == "baseline" and result.baseline["values"]["accuracy"] == 0.0
    right = [({"x": data["x"][:30]}, data["y"][:30])]
    assert quantuna.measure(quantuna.QuantConfig(), spec=tiny_spec_path, evaluation=right).measured["accuracy"] == 1.0


def test_joint_search_of_the_users_knob_and_quantunas(tiny_dir: Path, tiny_spec_path: Path) -> None:
    space = quantuna.search_space(tiny_spec_path)

    def objective(trial: optuna.Trial) -> list[float]:
        ratio = trial.suggest_categorical("my.prune_ratio", [0.0, 0.5])
        config = quantuna.suggest_config(trial, space)
        result = quantuna.measure(config, _prune(tiny_dir, ratio), spec=tiny_spec_path, trial=trial)
        quantuna.set_accuracy_constraint(trial, result, {"absolute": 0.1})
        return result.values

    sampler = quantuna.DistinctSampler(optuna.samplers.TPESampler(seed=0), space, prefix="quantuna.")
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=8)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) == 8
    baseline = study.user_attrs["baseline"]  # the spec model's, once per study
    keys = [t.user_attrs["config_key"] for t in complete]
    assert len(set(keys)) == len(keys)  # the opted-in guard: no repeated quantization config
    for t in complete:
        assert "my.prune_ratio" in t.params
        assert all(name == "my.prune_ratio" or name.startswith("quantuna.") for name in t.params)
        target = baseline["values"]["accuracy"] - 0.1
        assert t.constraints["accuracy"] == pytest.approx(target - t.user_attrs["values"]["accuracy"])
        assert t.user_attrs["feasible"] == (t.constraints["accuracy"] <= 0)
        assert t.values == [t.user_attrs["values"][n] for n in ("accuracy", "performance", "modelsize")]


def test_joint_search_with_threads_keeps_each_trials_measurement_its_own(tiny_dir: Path, tiny_spec_path: Path) -> None:
    space = quantuna.search_space(tiny_spec_path)

    def objective(trial: optuna.Trial) -> list[float]:
        config = quantuna.suggest_config(trial, space)
        model = _prune(tiny_dir, trial.suggest_categorical("my.r", [0.1, 0.6]), f"-{trial.number}")
        result = quantuna.measure(config, model, spec=tiny_spec_path, trial=trial)
        quantuna.set_accuracy_constraint(trial, result)
        return result.values

    study = optuna.create_study(directions=["maximize", "minimize", "minimize"],
                                sampler=optuna.samplers.RandomSampler(seed=2))
    study.optimize(objective, n_trials=8, n_jobs=2)
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert len(complete) + len(study.get_trials(states=(optuna.trial.TrialState.PRUNED,))) == 8
    for t in complete:
        assert t.values == [t.user_attrs["values"][n] for n in ("accuracy", "performance", "modelsize")]
        assert 0.0 <= t.values[0] <= 1.0 and t.values[1] > 0 and t.values[2] > 0


# --- samplers of the user's own --------------------------------------------------------------

RECORDING_SAMPLER = """\
import optuna

class RecordingSampler(optuna.samplers.RandomSampler):
    made = []

    def __init__(self, seed=None, label="none"):
        super().__init__(seed=seed)
        self.label, self.seed, self.asked = label, seed, 0
        RecordingSampler.made.append(self)

    def sample_independent(self, study, trial, name, distribution):
        self.asked += 1
        return super().sample_independent(study, trial, name, distribution)
"""


def test_a_sampler_class_named_in_the_spec_is_built_with_its_kwargs_and_guarded(tiny_dir: Path) -> None:
    (tiny_dir / "my_samplers.py").write_text(RECORDING_SAMPLER)
    spec = tiny_spec(tiny_dir)
    spec["study"] = {"name": "own", "seed": 7,
                     "sampler": {"class": "my_samplers.py:RecordingSampler", "kwargs": {"label": "mine"}}}
    spec["space"] = {"approach": ["static", "dynamic"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8"]}}
    path = write_spec(tiny_dir, spec)
    assert str(load_spec(path).study.sampler) == f"{tiny_dir / 'my_samplers.py'}:RecordingSampler"
    result = quantuna.tune(path, n_trials=4)
    sampler = result.study.sampler._sampler()  # noqa: SLF001 (quantuna's own WorkerSampler)
    assert isinstance(sampler, quantuna.DistinctSampler)
    base = sampler.base
    assert type(base).__name__ == "RecordingSampler"
    assert (base.label, base.seed) == ("mine", 7) and base.asked > 0
    keys = [t.user_attrs["config_key"] for t in result.study.trials]
    assert len(set(keys)) == 4  # the space's four configs, none twice


def test_a_sampler_instance_through_the_python_api(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"approach": ["static", "dynamic"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8"]}}
    mine = optuna.samplers.RandomSampler(seed=3)
    result = quantuna.tune(write_spec(tiny_dir, spec), n_trials=4, sampler=mine)
    assert result.study.sampler._sampler().base is mine  # noqa: SLF001
    assert len({t.user_attrs["config_key"] for t in result.study.trials}) == 4


@pytest.mark.parametrize("value, message", [
    ("annealing", "not a sampler name (auto, tpe, nsga2, gp, random, grid)"),
    ({"class": "my.mod:Cls", "kwarg": {}}, "kwarg: unknown key"),
    ({"class": "not a reference"}, "must look like 'package.module:Class'"),
    ({"class": "os:getcwd"}, "gave a str, not an optuna.samplers.BaseSampler"),
    ({"class": "optuna.samplers:RandomSampler", "kwargs": {"temperature": 1}}, "unexpected keyword"),
    ("no_such_module_q:Cls", "cannot import 'no_such_module_q'"),
])
def test_a_bad_sampler_class_is_one_spec_error_before_any_trial(tiny_dir: Path, value: Any, message: str) -> None:
    spec = tiny_spec(tiny_dir)
    spec["study"]["sampler"] = value
    with pytest.raises(SpecError, match=re.escape(message)):
        quantuna.tune(write_spec(tiny_dir, spec), n_trials=1)
    assert not (tiny_dir / "tiny.db").exists()


def test_the_objective_wraps_a_users_sampler_with_the_distinct_guard_on_request(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"approach": ["static", "dynamic"], "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8"]}}
    objective = quantuna.StudyObjective(write_spec(tiny_dir, spec), warm_start=False)
    study = optuna.create_study(directions=objective.directions,
                                sampler=objective.sampler(optuna.samplers.RandomSampler(seed=0), seed=0))
    study.optimize(objective, n_trials=4)
    assert len({t.user_attrs["config_key"] for t in study.trials}) == 4
