"""The CLI as a user runs it: real subprocesses on the shipped digits example and on bad input."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import tiny_spec, write_spec

pytestmark = pytest.mark.slow


def quantuna(*args: object, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "quantuna.cli", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL,
    )


def test_help_teaches_and_stays_light() -> None:
    out = quantuna("--help")
    assert out.returncode == 0
    for command in ("run", "validate", "export", "apply"):
        assert command in out.stdout
    probe = subprocess.run(
        [sys.executable, "-c", "import sys, quantuna.cli.app as c; c.build_parser();"
         "print(sorted(m for m in ('optuna', 'onnxruntime', 'onnx', 'numpy') if m in sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    assert probe.stdout.strip() == "[]"


def test_no_command_prints_help_and_fails() -> None:
    out = quantuna()
    assert out.returncode == 2 and "usage:" in out.stderr


def _assert_clean_failure(out: subprocess.CompletedProcess, *needles: str) -> None:
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("quantuna: error: "), out.stderr
    assert "Traceback" not in out.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    "mutate, needles",
    [
        (lambda s: s["tuning"].update(modee="pareto"), ["tiny.yaml", "tuning.modee", "unknown key"]),
        (lambda s: s["measure"]["performance"].update(iterations="lots"),
         ["tiny.yaml", "measure.performance.iterations", "'lots'"]),
        (lambda s: s.update(model="missing.onnx"), ["tiny.yaml", "model", "missing.onnx", "not found"]),
        (lambda s: s.update(model="eval.npz"), ["tiny.yaml", "model", "eval.npz", "not a valid ONNX model"]),
    ],
)
def test_bad_spec_exits_2_with_one_line_and_writes_nothing(tiny_dir: Path, mutate, needles) -> None:
    spec = tiny_spec(tiny_dir)
    mutate(spec)
    path = write_spec(tiny_dir, spec)
    before = sorted(p.name for p in tiny_dir.iterdir())
    _assert_clean_failure(quantuna("run", path), *needles)
    assert sorted(p.name for p in tiny_dir.iterdir()) == before


def test_spec_that_is_not_yaml(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("study: {name: x\nmodel: [\n")
    _assert_clean_failure(quantuna("run", path), "broken.yaml", "not valid YAML")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.yaml"]


def test_data_that_does_not_fit_the_model(tiny_dir: Path) -> None:
    import numpy as np

    np.savez(tiny_dir / "eval.npz", x=np.zeros((10, 3, 4, 4), np.float32), y=np.zeros(10, np.int64))
    path = write_spec(tiny_dir, tiny_spec(tiny_dir))
    _assert_clean_failure(quantuna("validate", path), "data.evaluation", "(10, 3, 4, 4)", "axis 1")


def test_validate_prints_the_space_and_its_size(digits_copy: Path) -> None:
    out = quantuna("validate", digits_copy)
    assert out.returncode == 0, out.stderr
    assert "distinct configurations" in out.stdout and "op.Conv" in out.stdout
    assert not (digits_copy.parent / "digits.db").exists()


def test_run_export_apply_on_the_digits_example(digits_copy: Path) -> None:
    work = digits_copy.parent
    run = quantuna("run", digits_copy, "--trials", "6", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "feasible Pareto front" in run.stdout and "storage: sqlite:///" in run.stdout
    assert "fp32" in run.stdout and "accuracy target (top1)" in run.stdout
    assert (work / "digits.db").exists()

    show = quantuna("show", digits_copy, "--format", "json")
    assert show.returncode == 0, show.stderr

    export = quantuna("export", digits_copy, "-o", work / "best.yaml", "--model", work / "best.onnx")
    assert export.returncode == 0, export.stderr
    assert "identical to the measured model" in export.stdout
    document = yaml.safe_load((work / "best.yaml").read_text())
    assert document["provenance"]["study"] == "digits-int8"
    assert document["calibration"]["sha256"]
    assert document["measured"]["baseline"]["accuracy"] > 0.9

    apply = quantuna("apply", work / "best.yaml", "--model", work / "models" / "digits_cnn.onnx",
                     "-o", work / "again.onnx")
    assert apply.returncode == 0, apply.stderr
    assert (work / "again.onnx").read_bytes() == (work / "best.onnx").read_bytes()

    more = quantuna("run", digits_copy, "--trials", "8", "--no-progress")  # resume: 2 more trials
    assert more.returncode == 0, more.stderr
    assert "8 complete" in more.stdout or "failed" in more.stdout


def _count_finished(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_ctrl_c_leaves_the_study_resumable(digits_copy: Path) -> None:
    db = digits_copy.parent / "digits.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "quantuna.cli", "run", str(digits_copy), "--trials", "12", "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while _count_finished(db) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "run the same command to resume" in err and "Traceback" not in err
    done = _count_finished(db)
    assert 3 <= done < 12

    again = quantuna("run", digits_copy, "--trials", "12", "--no-progress")
    assert again.returncode == 0, again.stderr
    assert _count_finished(db) + _failed_with_reason(db) == 12


def _failed_with_reason(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT COUNT(*) FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
            "WHERE t.state = 'FAIL' AND a.key = 'fail_reason'"
        ).fetchone()[0]


def test_a_target_beyond_the_metrics_bound_exits_2_with_one_line(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["accuracy_criterion"] = {"relative": -0.005}  # fp32 scores 1.0: top1 >= 1.005
    out = quantuna("run", write_spec(tiny_dir, spec), "--no-progress")
    _assert_clean_failure(out, "tiny.yaml", "tuning.accuracy_criterion", "1.005", "top1's bound of 1")
    assert _count_finished(tiny_dir / "tiny.db") == 0


def test_a_budget_larger_than_the_space_stops_exits_0_and_says_so(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["space"] = {"approach": ["dynamic"]}  # fp32, dynamic [Conv]: 2 distinct configs
    spec["tuning"]["exit_policy"] = {"max_trials": 40}
    path = write_spec(tiny_dir, spec)
    run = quantuna("run", path)  # with the progress bar: the line is written above it
    assert run.returncode == 0, run.stderr
    line = ("quantuna: the space is exhausted: all 2 distinct configs have a finished trial; "
            "2 trials spent, 38 of the 40-trial budget left unused")
    assert run.stderr.count(line) == 1, run.stderr
    assert "trials: 2 complete" in run.stdout
    again = quantuna("run", path)  # resumed: no trial, the same line, not "budget reached"
    assert again.returncode == 0 and line in again.stderr and "budget reached" not in again.stderr
    assert "trials: 2 complete" in again.stdout
