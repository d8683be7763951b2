"""Several workers on one study, over real PostgreSQL and Redis servers at 127.0.0.1.

Each test gets its own PostgreSQL schema or Redis key prefix and removes it afterwards. Without a
reachable server a test skips with the reason; in CI (``CI=true``) it fails instead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_spec, write_spec

pytestmark = pytest.mark.slow

HOST = "127.0.0.1"
SECRET = "pw-must-not-show-7e1c"
FAST_HEARTBEAT = {"QUANTUNA_HEARTBEAT_INTERVAL": "1", "QUANTUNA_HEARTBEAT_GRACE": "3"}


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the distributed tests must run)")
    pytest.skip(reason)


@pytest.fixture()
def postgres_url() -> Any:
    """A URL (with a password, which trust auth ignores) to a fresh schema of database test."""
    psycopg2 = pytest.importorskip("psycopg2")
    conn, errors = None, []
    for user in ("postgres", "root"):
        try:
            conn = psycopg2.connect(host=HOST, port=5432, dbname="test", user=user, connect_timeout=3)
            break
        except psycopg2.OperationalError as exc:
            errors.append(f"{user}: {str(exc).strip().splitlines()[0]}")
    if conn is None:
        _unavailable(f"no PostgreSQL at {HOST}:5432 (database test): {'; '.join(errors)}")
    conn.autocommit = True
    schema = f"quantuna_test_{uuid.uuid4().hex[:10]}"
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA {schema}")
    try:
        yield (f"postgresql+psycopg2://{conn.info.user}:{SECRET}@{HOST}:5432/test"
               f"?options=-csearch_path%3D{schema}")
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()


@pytest.fixture()
def redis_url() -> Any:
    """A URL to a Redis journal under its own key prefix."""
    redis = pytest.importorskip("redis")
    client = redis.Redis(host=HOST, port=6379, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        _unavailable(f"no Redis at {HOST}:6379: {exc}")
    prefix = f"quantuna-test-{uuid.uuid4().hex[:10]}"
    try:
        yield f"redis://{HOST}:6379/0?prefix={prefix}"
    finally:
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)
        client.close()


@pytest.fixture(params=["postgres", "redis"])
def storage_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_url")


def _spec(directory: Path, budget: int, **overrides: Any) -> Path:
    """The tiny spec with a small space (5 distinct configs: dynamic has no Gemm kernel)."""
    spec = tiny_spec(directory, **overrides)
    spec["study"] = {"name": f"dist-{uuid.uuid4().hex[:8]}", "seed": 0}
    spec["tuning"]["exit_policy"] = {"max_trials": budget}
    spec["space"] = {
        "approach": ["static", "dynamic"],
        "quant_format": ["QDQ"],
        "calibrate_method": ["MinMax"],
        "op_types": {"Conv": ["int8", "fp32"], "Gemm": ["int8", "fp32"]},
    }
    return write_spec(directory, spec)


SLOW_METRIC = """\
import os, time
import numpy as np
from pathlib import Path

CALLS = []


def top1_slowly(outputs, labels):
    CALLS.append(1)
    if len(CALLS) == 1:  # quantuna's one-batch probe of the metric, before any trial
        return float((np.asarray(outputs).argmax(axis=1) == labels).mean())
    here = Path(__file__).parent
    with open(here / "pids", "a") as fh:
        fh.write(f"{os.getpid()}\\n")
    busy = here / f"busy-{os.getpid()}"
    busy.write_text("")
    time.sleep(1.0)
    busy.unlink()
    return float((np.asarray(outputs).argmax(axis=1) == labels).mean())
"""


def _write_slow_metric(directory: Path) -> dict[str, Any]:
    """A top-1 metric that takes a second and leaves busy-<pid> while it runs (from its second
    call in a process on: the first is quantuna's one-batch probe, before any trial)."""
    (directory / "slow_metric.py").write_text(SLOW_METRIC)
    return {"metric": f"{directory / 'slow_metric.py'}:top1_slowly", "higher_is_better": True}


def _command(*args: object) -> list[str]:
    return [sys.executable, "-m", "quantuna.cli", *map(str, args)]


def _start(*args: object, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        _command(*args), cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env={**os.environ, **FAST_HEARTBEAT},
    )


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def _load(url: str, spec_path: Path) -> optuna.Study:
    import yaml

    from quantuna.study.storage import make_storage

    name = yaml.safe_load(spec_path.read_text())["study"]["name"]
    return optuna.load_study(study_name=name, storage=make_storage(url))


def _assert_one_measurement_per_config(study: optuna.Study) -> None:
    measured: dict[str, list[int]] = {}
    for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        if t.user_attrs.get("reused_measurement_from") is None:
            measured.setdefault(t.user_attrs["config_key"], []).append(t.number)
    assert all(len(numbers) == 1 for numbers in measured.values()), measured


def _spent(study: optuna.Study) -> int:
    from quantuna.study.budget import count_spent

    return count_spent(study)


@pytest.mark.parametrize("launch", ["three commands", "--jobs 3"])
def test_workers_share_one_budget_baseline_and_measurements(
    tiny_dir: Path, storage_url: str, launch: str
) -> None:
    budget = 4  # below the space's 5 configs: the budget, not the space, ends the study
    spec = _spec(tiny_dir, budget)
    if launch == "--jobs 3":
        procs = [_start("-v", "run", spec, "--storage", storage_url, "--jobs", 3, cwd=tiny_dir)]
    else:  # what three machines do: the same command, at the same time
        procs = [_start("-v", "run", spec, "--storage", storage_url, "--no-progress", cwd=tiny_dir)
                 for _ in range(3)]
    results = [_finish(p) for p in procs]
    output = "\n".join(text for _, text in results)
    assert all(code == 0 for code, _ in results), output
    assert "Traceback" not in output
    assert SECRET not in output
    assert output.count("measuring the fp32 baseline ...") == 1, output

    study = _load(storage_url, spec)
    states = [t.state for t in study.trials]
    finished = [s for s in states if s.is_finished()]
    assert len(finished) == budget and _spent(study) == budget, states
    assert optuna.trial.TrialState.RUNNING not in states
    _assert_one_measurement_per_config(study)
    assert study.user_attrs["baseline"]["values"]["accuracy"] > 0
    assert SECRET not in repr(study.user_attrs) + repr([t.user_attrs for t in study.trials])


@pytest.mark.parametrize("launch", ["three commands", "--jobs 3"])
def test_workers_stop_when_the_space_is_exhausted_and_say_so(
    tiny_dir: Path, storage_url: str, launch: str
) -> None:
    budget = 12  # over twice the space's 5 distinct configs
    spec = _spec(tiny_dir, budget)
    from quantuna.spec import load_spec
    from quantuna.study.session import prepare

    distinct = len(prepare(load_spec(spec)).space.distinct_configs())
    assert distinct == 5
    if launch == "--jobs 3":
        procs = [_start("run", spec, "--storage", storage_url, "--jobs", 3, cwd=tiny_dir)]
    else:
        procs = [_start("-v", "run", spec, "--storage", storage_url, "--no-progress", cwd=tiny_dir)
                 for _ in range(3)]
    results = [_finish(p) for p in procs]
    output = "\n".join(text for _, text in results)
    assert all(code == 0 for code, _ in results), output
    assert "the space is exhausted: all 5 distinct configs have " in output, output
    study = _load(storage_url, spec)
    keys = {t.user_attrs.get("config_key") for t in study.trials if t.state.is_finished()}
    assert len(keys) == distinct
    # a worker stops once the configs left run in other workers: one whose last draw raced
    # another's may repeat one config, once; none spins through the budget on repeats
    assert distinct <= _spent(study) <= distinct + 2 < budget
    _assert_one_measurement_per_config(study)
    spent = _spent(study)
    code, again = _finish(_start("run", spec, "--storage", storage_url, cwd=tiny_dir))  # resumed
    assert code == 0 and "the space is exhausted" in again, again
    assert _spent(_load(storage_url, spec)) == spent


def test_a_killed_worker_loses_no_trial_and_a_restart_completes_the_study(
    tiny_dir: Path, storage_url: str
) -> None:
    budget = 4  # below the space's 5 configs: the budget, not the space, ends the study
    spec = _spec(tiny_dir, budget, accuracy=_write_slow_metric(tiny_dir))
    worker = _start("run", spec, "--storage", storage_url, "--no-progress", cwd=tiny_dir)
    busy = tiny_dir / f"busy-{worker.pid}"
    deadline = time.monotonic() + 240
    study = None
    while time.monotonic() < deadline:
        if study is None:
            try:
                study = _load(storage_url, spec)
            except KeyError:  # not created yet
                pass
        if study is not None:
            trials = study.get_trials(deepcopy=False)
            complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            if len(complete) >= 2 and busy.exists() and any(
                t.state == optuna.trial.TrialState.RUNNING for t in trials
            ):
                os.kill(worker.pid, signal.SIGKILL)
                break
        assert worker.poll() is None, worker.communicate()
        time.sleep(0.05)
    else:
        pytest.fail("the worker never reached a trial's evaluation")
    worker.wait()
    assert study is not None
    before = {t.number: t.values for t in study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))}
    running = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))]
    assert len(running) == 1 and 2 <= len(before) < budget, (before, running)
    time.sleep(4)  # past the heartbeat grace period: the next worker fails and retries it

    code, output = _finish(_start("run", spec, "--storage", storage_url, "--jobs", 2, cwd=tiny_dir))
    assert code == 0, output
    assert "Traceback" not in output and SECRET not in output

    study = _load(storage_url, spec)
    after = {t.number: t for t in study.trials}
    assert all(after[n].state == optuna.trial.TrialState.COMPLETE and after[n].values == v
               for n, v in before.items())
    killed = after[running[0]]
    assert killed.state == optuna.trial.TrialState.FAIL and "fail_reason" not in killed.user_attrs
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retried) == 1 and retried[0].state.is_finished()
    assert _spent(study) == budget
    assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]
    _assert_one_measurement_per_config(study)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_every_job_and_the_same_command_resumes(tiny_dir: Path, presses: int) -> None:
    """Once: the workers end their running trial; twice 0.15 s apart: they are killed at once."""
    budget = 4  # below the space's 5 configs: the budget, not the space, ends the study
    spec = _spec(tiny_dir, budget, accuracy=_write_slow_metric(tiny_dir))
    url = f"sqlite:///{tiny_dir / 'jobs.db'}"
    parent = _start("run", spec, "--storage", url, "--jobs", 2, "--no-progress", cwd=tiny_dir)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith("busy-") and p.name != f"busy-{parent.pid}"
                  for p in tiny_dir.iterdir()):  # a worker is evaluating a trial
        assert time.monotonic() < deadline and parent.poll() is None, parent.communicate()
        time.sleep(0.05)
    parent.send_signal(signal.SIGINT)  # what Ctrl-C does: the workers are in their own group
    pressed = time.monotonic()
    if presses == 2:
        time.sleep(0.15)
        parent.send_signal(signal.SIGINT)
    code, output = _finish(parent, timeout=60)
    assert time.monotonic() - pressed < (10 if presses == 2 else 30), output
    assert code == 130, output
    assert output.count("interrupted: the finished trials are stored") == 1, output
    assert "Traceback" not in output
    pids = {int(line) for line in (tiny_dir / "pids").read_text().split()} - {parent.pid}
    time.sleep(0.5)
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    study = _load(url, spec)
    assert _spent(study) < budget
    if presses == 1:  # killed workers leave their trial to the heartbeat, which fails it later
        assert optuna.trial.TrialState.RUNNING not in [t.state for t in study.trials]

    code, output = _finish(_start("run", spec, "--storage", url, "--jobs", 2, cwd=tiny_dir))
    assert code == 0, output
    study = _load(url, spec)
    assert _spent(study) == budget
    _assert_one_measurement_per_config(study)


# ---------------------------------------------------------------------------------------------
# Without servers: the pieces the workers are built from.


def _count_under_mutex(url: str, name: str, rounds: int) -> None:
    from quantuna.study.mutex import StudyMutex
    from quantuna.study.storage import make_storage

    study = optuna.load_study(study_name=name, storage=make_storage(url))
    mutex = StudyMutex(study, "counter")
    for _ in range(rounds):
        with mutex:  # a read-modify-write that loses updates unless the mutex excludes
            value = study.user_attrs.get("count", 0)
            time.sleep(0.01)
            study.set_user_attr("count", value + 1)


def test_the_study_mutex_excludes_across_processes(tmp_path: Path) -> None:
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'mutex.db'}"
    from quantuna.study.storage import make_storage

    optuna.create_study(study_name="m", storage=make_storage(url))
    context = multiprocessing.get_context("spawn")
    procs = [context.Process(target=_count_under_mutex, args=(url, "m", 5)) for _ in range(3)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0, 0]
    study = optuna.load_study(study_name="m", storage=make_storage(url))
    assert study.user_attrs["count"] == 15


def test_worker_seeds_keep_the_spec_seed_for_the_first_worker() -> None:
    from quantuna.study.worker_sampler import worker_seed

    assert worker_seed(0, 0) == 0 and worker_seed(None, 5) is None
    seeds = {worker_seed(0, n) for n in range(1, 50)}
    assert len(seeds) == 49 and worker_seed(0, 7) == worker_seed(0, 7)


def test_a_study_measured_on_two_cpus_warns(caplog: pytest.LogCaptureFixture) -> None:
    from quantuna.study.workers import mixed_cpus, warn_mixed_cpus

    study = optuna.create_study()
    study.set_user_attr("baseline", {"host": "a", "cpu": "CPU one"})
    for host, cpu in (("a", "CPU one"), ("b", "CPU one")):
        study.add_trial(optuna.create_trial(value=1.0, user_attrs={"host": host, "cpu": cpu}))
    assert not warn_mixed_cpus(study)
    study.add_trial(optuna.create_trial(value=1.0, user_attrs={"host": "c", "cpu": "CPU two"}))
    with caplog.at_level("WARNING", logger="quantuna.study.workers"):
        assert warn_mixed_cpus(study)
    one, two = "CPU one (no int8 ISA extension)", "CPU two (no int8 ISA extension)"
    assert mixed_cpus(study) == {one: ["a", "b"], two: ["c"]}
    assert "not comparable" in caplog.text and f"{two} (c)" in caplog.text


def test_storage_errors_never_show_the_password() -> None:
    from quantuna.errors import SpecError
    from quantuna.study.storage import make_storage

    with pytest.raises(SpecError) as info:
        make_storage(f"postgresql+psycopg2://someone:{SECRET}@127.0.0.1:1/none")
    assert SECRET not in str(info.value) and "***" in str(info.value)
