"""The front and the pick are true: latency against fp32 in rounds, confirmed before it is
reported, and an honest answer when nothing meets the target (real onnxruntime and Optuna)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
import yaml
from conftest import tiny_spec, write_spec

from quantuna.cli.app import main
from quantuna.study.run import load_results, run_study
from quantuna.summary import show_payload, summarize

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_each_trial_stores_its_latency_against_fp32_and_its_host(tiny_spec_path: Path) -> None:
    result = run_study(tiny_spec_path, n_trials=3, confirm=False)
    baseline = result.study.user_attrs["baseline"]
    assert baseline["latency"]["rounds"] == 10 and baseline["latency"]["runs"] == 1
    assert baseline["latency"]["low"] <= baseline["latency"]["high"]
    assert baseline["threads"] == {"latency": 1, "accuracy": 0} and baseline["cpu_cores"] >= 1
    for t in result.study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = t.user_attrs
        latency = attrs["latency"]
        assert set(latency) == {"ms", "fp32_ms", "ratio", "low", "high", "rounds", "runs"}
        assert latency["low"] <= latency["ratio"] <= latency["high"]
        assert attrs["relative"]["performance"] == latency["ratio"]
        if attrs["reused_measurement_from"] is None:  # measured here: ms is Performance's median
            assert latency["ms"] == attrs["values"]["performance"]
            assert "lock_wait" in attrs["seconds"] and attrs["seconds"]["lock_wait"] >= 0
        assert attrs["cpu_cores"] >= 1 and isinstance(attrs["cpu_isa"], list)
        assert attrs["threads"] == {"latency": 1, "accuracy": 0}
    assert "confirmed" not in result.study.user_attrs


def test_the_confirm_phase_retimes_the_front_and_the_pick_uses_it(digits_copy: Path) -> None:
    result = run_study(digits_copy, n_trials=6)
    confirmed = result.study.user_attrs["confirmed"]
    assert confirmed["rounds"] == 10 and confirmed["fp32"]["ms"] > 0
    assert result.pareto and all(t.confirmed for t in result.pareto)
    for t in result.pareto:
        if t.config.is_fp32:  # the reference itself (a config that quantized nothing): ratio 1
            assert t.relative["performance"] == 1.0
            assert t.values["performance"] == confirmed["fp32"]["ms"]
            continue
        figures = confirmed["trials"][str(t.number)]
        assert figures["rebuilt_identical"] is True  # the same bytes were re-timed
        assert figures["measured_on"]["cpu"] == confirmed["cpu"]  # each figure keeps its CPU
        assert t.values["performance"] == figures["ms"] and t.relative["performance"] == figures["ratio"]
        assert t.latency == figures
    pick = result.pick()
    assert pick.trial.confirmed and not pick.trial.slower_than_fp32
    assert result.cpus is not None and result.cpus.why == "the CPU the confirm phase ran on"
    assert not result.cpus.mixed  # one host: no cpus line, the summary as before
    # what everyone shows comes from the confirmed figures
    summary = summarize(result).to_text()
    assert "confirmed: trial" in summary
    payload = show_payload(load_results(digits_copy))
    assert payload["pick"]["trial"] == pick.trial.number and payload["pick"]["confirmed"] is True
    assert payload["confirmed"]["trials"] == confirmed["trials"]


def test_confirm_false_leaves_the_trials_own_figures(tiny_dir: Path) -> None:
    spec = tiny_spec(tiny_dir)
    spec["measure"]["confirm"] = False
    result = run_study(write_spec(tiny_dir, spec), n_trials=3)
    assert "confirmed" not in result.study.user_attrs
    assert all(not t.confirmed for t in result.trials)


def _missed_target_spec(tiny_dir: Path) -> Path:
    data = dict(np.load(tiny_dir / "eval.npz"))
    data["y"] = data["y"].copy()
    data["y"][:12] = (data["y"][:12] + 1) % 3  # fp32 top1 = 0.8
    np.savez(tiny_dir / "eval.npz", **data)
    spec = tiny_spec(tiny_dir)
    spec["tuning"]["accuracy_criterion"] = {"relative": -0.2}  # 0.96: reachable, not met
    return write_spec(tiny_dir, spec)


def test_a_missed_target_says_so_everywhere_and_export_needs_consent(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _missed_target_spec(tiny_dir)
    assert main(["run", str(path), "--trials", "3", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "no trial meets the accuracy target; best effort: trial" in out
    assert "target 0.96" in out and "performance" in out.split("best effort")[-1]

    assert main(["show", str(path), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["pick"]["feasible"] is False
    assert payload["pick"]["reason"].startswith("no trial meets the accuracy target")
    assert payload["pick"]["values"]["accuracy"] == pytest.approx(0.8, abs=0.1)
    assert payload["trials"] == {"COMPLETE": 3}
    assert payload["units"]["performance"] == "performance [ms]"
    assert payload["storage"].startswith("sqlite:///")

    out_file = tiny_dir / "best.yaml"
    assert main(["export", str(path), "-o", str(out_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--allow-infeasible" in err[0] and "no trial meets" in err[0]
    assert not out_file.exists()
    assert main(["export", str(path), "-o", str(out_file), "--allow-infeasible"]) == 0
    document = yaml.safe_load(out_file.read_text())
    assert document["measured"]["feasible"] is False and document["measured"]["reason"]


@pytest.mark.parametrize("metric, criterion, labels", [
    ("top1", {"relative": -0.005}, None),
    ("top5", {"absolute": -0.01}, None),
    ("cosine", {"absolute": -0.01}, "self"),
    ("mse", {"absolute": -0.5}, "self"),
])
def test_a_target_beyond_the_bound_exits_2_with_one_line_before_any_trial(
    tiny_dir: Path, capsys: pytest.CaptureFixture[str], metric: str, criterion: dict, labels: str | None
) -> None:
    import onnxruntime as ort

    spec = tiny_spec(tiny_dir)
    spec["accuracy"] = {"metric": metric}
    spec["tuning"]["accuracy_criterion"] = criterion
    spec["tuning"]["multi_objectives"].pop("higher_is_better")  # each metric's own direction
    if labels == "self":  # regression metrics against fp32's own outputs: fp32 scores the bound
        data = dict(np.load(tiny_dir / "eval.npz"))
        session = ort.InferenceSession(str(tiny_dir / "tiny.onnx"), providers=["CPUExecutionProvider"])
        data["y"] = session.run(None, {"x": data["x"]})[0]
        np.savez(tiny_dir / "eval.npz", **data)
    path = write_spec(tiny_dir, spec)
    assert main(["run", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("quantuna: error: ")
    assert "tuning.accuracy_criterion" in err[0] and f"beyond {metric}'s bound" in err[0]
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{tiny_dir / 'tiny.db'}")
    assert study.trials == []


def test_a_lock_wait_is_recorded_apart_and_never_timed(tiny_dir: Path, monkeypatch) -> None:
    import threading

    from quantuna.ort import latency
    from quantuna.spec import load_spec
    from quantuna.study.baseline import measure_model
    from quantuna.study.session import prepare

    lock = tiny_dir / "latency.lock"
    monkeypatch.setattr(latency, "latency_lock_path", lambda: lock)
    session = prepare(load_spec(write_spec(tiny_dir, tiny_spec(tiny_dir))))
    held, told = threading.Event(), threading.Event()
    seen: list[str | None] = []

    def other_worker() -> None:
        with latency.latency_lock("study other", path=lock):
            held.set()
            told.wait(10)
            threading.Event().wait(1.0)  # keep it a while after the waiter said so

    def on_wait(who: str | None) -> None:
        seen.append(who)
        told.set()

    from dataclasses import replace

    assert session.timing is not None
    session = replace(session, timing=replace(session.timing, on_wait=on_wait))
    thread = threading.Thread(target=other_worker)
    thread.start()
    held.wait(10)
    m = measure_model(session, tiny_dir / "tiny.onnx")
    thread.join()
    assert seen[0] is not None and seen[0].endswith("study other") and seen[-1] is None
    assert m.seconds["lock_wait"] >= 1.0  # the holder kept it at least that long
    assert m.seconds["timing"] < m.seconds["lock_wait"]  # the wait is not in the timing
    assert m.latency is not None and m.latency.rounds == 10
