"""StudyObjective in the user's own worker processes: ``study.optimize`` on one shared storage
(SQLite, PostgreSQL), and Optuna's retry callback (``RetryHeartbeatStaleTrialCallback``, and its
deprecated Optuna 4 name ``RetryFailedTrialCallback``) retrying a killed worker's trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from conftest import tiny_spec, write_spec
from test_distributed import _write_slow_metric, postgres_url  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

WORKER = """\
import logging, sys
import optuna, quantuna

logging.basicConfig(level=logging.INFO)
spec, url, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
objective = quantuna.StudyObjective(spec)
engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
storage = optuna.storages.RDBStorage(
    url, engine_kwargs=engine, heartbeat_interval=1, grace_period=3,
    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
)
study = optuna.load_study(study_name="shared", storage=storage, sampler=optuna.samplers.RandomSampler())
objective.prepare(study)
study.optimize(objective, callbacks=[optuna.study.MaxTrialsCallback(total, states=None)])
"""


def _user_storage(url: str, retry: str = "RetryHeartbeatStaleTrialCallback") -> optuna.storages.RDBStorage:
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    callback = getattr(optuna.storages, retry)(max_retry=1)
    keyword = "failed_trial_callback" if retry == "RetryFailedTrialCallback" else "heartbeat_stale_trial_callback"
    return optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=1, grace_period=3,
                                      **{keyword: callback})


def _small_space(directory: Path, **overrides: object) -> Path:
    spec = tiny_spec(directory, **overrides)
    spec["space"] = {"approach": ["static", "dynamic"], "quant_format": ["QDQ"],
                     "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]}}
    return write_spec(directory, spec)


def _start(directory: Path, spec: Path, url: str, total: int) -> subprocess.Popen:
    script = directory / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), str(spec), url, str(total)], cwd=directory,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


@pytest.fixture(params=["sqlite", "postgres"])
def user_url(request: pytest.FixtureRequest, tiny_dir: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tiny_dir / 'mine.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_two_processes_run_one_user_study_through_study_optimize(tiny_dir: Path, user_url: str) -> None:
    import quantuna

    spec = _small_space(tiny_dir)
    directions = quantuna.StudyObjective(spec).directions
    optuna.create_study(study_name="shared", storage=_user_storage(user_url), directions=directions)
    workers = [_start(tiny_dir, spec, user_url, 10) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], "\n".join(outputs)
    assert "\n".join(outputs).count("measuring the fp32 baseline ...") == 1  # once per study
    study = optuna.load_study(study_name="shared", storage=_user_storage(user_url))
    assert 10 <= len(study.trials) <= 12  # each worker may start one trial past the callback's count
    assert all(t.state.is_finished() for t in study.trials)
    measured: dict[str, list[int]] = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        assert "values" in t.user_attrs and "constraint" in t.user_attrs
        if t.user_attrs["reused_measurement_from"] is None:
            measured.setdefault(t.user_attrs["config_key"], []).append(t.number)
    assert measured and all(len(n) == 1 for n in measured.values()), measured  # each config once
    assert len(quantuna.load_results(study).trials) == len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)))


@pytest.mark.filterwarnings("ignore:.*deprecated in v4.9.0:FutureWarning")
@pytest.mark.parametrize("retry", ["RetryHeartbeatStaleTrialCallback", "RetryFailedTrialCallback"])
def test_the_retry_callback_reruns_a_killed_workers_trial(tiny_dir: Path, retry: str) -> None:
    import quantuna

    url = f"sqlite:///{tiny_dir / 'mine.db'}"
    spec = _small_space(tiny_dir, accuracy=_write_slow_metric(tiny_dir))
    objective = quantuna.StudyObjective(spec, warm_start=False)
    study = optuna.create_study(study_name="shared", storage=_user_storage(url, retry),
                                directions=objective.directions)
    study.enqueue_trial({"op.Conv": "int8", "op.Gemm": "int8", "approach": "dynamic"})
    objective.prepare(study)  # the baseline first, so that the worker dies inside a trial
    worker = _start(tiny_dir, spec, url, 1)
    busy = tiny_dir / f"busy-{worker.pid}"
    deadline = time.monotonic() + 120
    while not busy.exists():  # the worker is inside the accuracy pass of trial 0
        assert worker.poll() is None and time.monotonic() < deadline, worker.communicate()[0]
        time.sleep(0.05)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    time.sleep(4)  # past the grace period: the next optimize fails the trial and retries it
    study.optimize(objective, n_trials=1)
    killed, retried = study.trials[0], study.trials[-1]
    assert killed.state == optuna.trial.TrialState.FAIL
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) == killed.number
    assert retried.state == optuna.trial.TrialState.COMPLETE
    assert retried.params == killed.params
    assert retried.user_attrs["config_key"] == killed.user_attrs["config_key"]
    assert retried.user_attrs["reused_measurement_from"] is None  # measured, by the survivor
