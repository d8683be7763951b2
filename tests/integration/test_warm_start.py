"""The warm start tries an outlier-resistant calibration, the other format and each op type alone
early."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_spec, write_spec

from quantuna.study.run import run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_outliers_in_calibration_meet_percentile_in_the_warm_start(tiny_dir: Path) -> None:
    calib = np.load(tiny_dir / "calib.npz")["x"].copy()
    calib[:2] *= 50  # two bad calibration images
    np.savez(tiny_dir / "calib.npz", x=calib)
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"calibrate_method": ["MinMax", "Percentile"], "percentile": [99.0, 99.9]}
    result = run_study(write_spec(tiny_dir, spec), n_trials=10)
    first = [t.user_attrs["summary"] for t in result.study.trials[:5]]
    assert first == [  # outliers detected: the robust calibration leads the warm start
        "static QDQ U8S8 Percentile(99.0)/40 [Conv,Gemm]",  # the space's lowest percentile
        "static QDQ U8S8 MinMax/40 [Conv,Gemm]", "fp32",
        "static QDQ U8S8 MinMax/40 [Conv]", "static QDQ U8S8 MinMax/40 [Gemm]",
    ]
    percentile, minmax = (result.study.trials[i].user_attrs["values"]["accuracy"] for i in range(2))
    assert percentile > minmax  # the outliers cost MinMax accuracy that Percentile keeps


def test_a_space_with_both_formats_tries_the_other_one_early(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"quant_format": ["QDQ", "QOperator"], "calibrate_method": ["MinMax", "Percentile"],
                     "percentile": [99.9]}
    spec["tuning"]["multi_objectives"] = {"objective": ["accuracy", "performance"],
                                          "higher_is_better": [True, False]}
    result = run_study(write_spec(tiny_dir, spec), n_trials=10)
    first = [t.user_attrs["summary"] for t in result.study.trials[:6]]
    assert first == [
        "static QDQ U8S8 MinMax/40 [Conv,Gemm]", "fp32",
        "static QDQ U8S8 Percentile(99.9)/40 [Conv,Gemm]",
        "static QOperator U8S8 MinMax/40 [Conv,Gemm]",  # the default int8 config, other format
        "static QDQ U8S8 MinMax/40 [Conv]", "static QDQ U8S8 MinMax/40 [Gemm]",
    ]


def test_with_modelsize_an_objective_the_warm_start_leads_with_the_smaller_format(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)  # objectives: accuracy, performance, modelsize
    spec["space"] = {"quant_format": ["QDQ", "QOperator"], "calibrate_method": ["MinMax"]}
    result = run_study(write_spec(tiny_dir, spec), n_trials=10)
    trials = result.study.trials
    first = [t.user_attrs["summary"] for t in trials[:4]]
    assert first == [
        "static QOperator U8S8 MinMax/40 [Conv,Gemm]", "fp32",
        "static QDQ U8S8 MinMax/40 [Conv,Gemm]",  # the other format follows
        "static QOperator U8S8 MinMax/40 [Conv]",
    ]
    assert trials[0].user_attrs["model_bytes"] < trials[2].user_attrs["model_bytes"]


def test_a_small_budget_leaves_no_warm_start_trial_waiting(tiny_spec_path: Path) -> None:
    result = run_study(tiny_spec_path, n_trials=3)
    assert [t.state.name for t in result.study.trials].count("WAITING") == 0


def test_runs_started_at_once_enqueue_the_warm_start_once(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Three ``quantuna run`` at once on one storage each found the study empty and enqueued the
    warm start (optuna's ``skip_if_exists`` checks, then inserts): every config ran three times."""
    import threading

    import optuna

    from quantuna.spec import load_spec
    from quantuna.study.sensitivity import enqueue_warm_start
    from quantuna.study.session import prepare

    session = prepare(load_spec(write_spec(tiny_dir, tiny_spec(tiny_dir))))
    url = f"sqlite:///{tiny_dir / 'race.db'}"
    optuna.create_study(study_name="race", storage=url)
    slow = optuna.Study.enqueue_trial

    def enqueue_slowly(self: optuna.Study, *args: object, **kwargs: object) -> None:
        import time

        time.sleep(0.05)  # the window between optuna's check and its insert, made wide
        slow(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(optuna.Study, "enqueue_trial", enqueue_slowly)
    start = threading.Barrier(3)

    def run() -> None:
        study = optuna.load_study(study_name="race", storage=url)
        start.wait()
        enqueue_warm_start(study, session, 12)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    waiting = optuna.load_study(study_name="race", storage=url).get_trials(deepcopy=False)
    params = [tuple(sorted(t.system_attrs["fixed_params"].items())) for t in waiting]
    assert params and len(params) == len(set(params)), params  # each config once
