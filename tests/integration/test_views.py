"""What a person sees of a finished study: the annotated front and the study note's picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_spec, write_spec

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture()
def tiny_result(tiny_dir: Path) -> Any:
    import quantuna

    spec = tiny_spec(tiny_dir)
    spec["tuning"] = {**spec["tuning"], "exit_policy": {"max_trials": 5}}
    return quantuna.tune(write_spec(tiny_dir, spec))


def test_front_panels_put_each_trial_in_one_kind_and_fp32_apart(tiny_result: Any) -> None:
    from quantuna.frontplot import panels

    shown = panels(tiny_result)
    others = [n for n in tiny_result.objective_names if n != "accuracy"]
    assert [p.name for p in shown] == others
    fp32 = {t.number for t in tiny_result.trials if t.config.is_fp32}
    assert fp32, "fp32 is a trial of every study"
    for panel in shown:
        numbers = [p[2] for p in panel.front + panel.feasible + panel.infeasible]
        assert sorted(numbers) == sorted(t.number for t in tiny_result.trials if t.number not in fp32)
        assert {p[2] for p in panel.front} == {t.number for t in tiny_result.pareto} - fp32
        assert panel.fp32 is not None and "[" in panel.x_label  # a unit on the axis


def test_front_labels_never_overlap() -> None:
    from matplotlib.figure import Figure

    from quantuna.frontplot import _Labels, _overlap

    ax = Figure(figsize=(4, 3), dpi=100).subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    labels = _Labels(ax)
    for i in range(8):  # eight points on top of each other
        labels.add(f"#{i}", (0.5, 0.5))
    boxes = labels.boxes
    assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_note_starts_with_the_front_picture_stored_as_a_study_artifact(tiny_result: Any) -> None:
    pytest.importorskip("optuna_dashboard")
    from optuna_dashboard._note import get_note_from_system_attrs  # noqa: PLC2701

    from quantuna._compat import study_id
    from quantuna.study.artifacts import FRONT_ARTIFACT, artifact_store

    study = tiny_result.study
    system = study._storage.get_study_system_attrs(study_id(study))  # noqa: SLF001
    note = get_note_from_system_attrs(system, None)["body"]
    first = note.splitlines()[0]
    assert first.startswith("![the annotated front](/artifacts/"), first
    metas = optuna.artifacts.get_all_artifact_meta(study)
    png = [m for m in metas if m.filename == FRONT_ARTIFACT]
    assert png and first.endswith(f"/{png[-1].artifact_id})")
    with artifact_store(tiny_result.session.spec).open_reader(png[-1].artifact_id) as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_the_study_answers_at_a_glance_in_short_study_attrs(tiny_result: Any) -> None:
    pytest.importorskip("optuna_dashboard")
    shown = tiny_result.study.user_attrs
    assert list(shown)[:4] == ["Accuracy target", "Export pick", "FP32 baseline", "Feasible trials"]
    pick = tiny_result.pick("weighted").trial.number
    assert shown["Export pick"].startswith(f"trial {pick} by")
    assert shown["Accuracy target"].startswith(">= ") and "accuracy (top1)" in shown["FP32 baseline"]


def test_the_line_joins_only_the_panels_own_front() -> None:
    from quantuna.frontplot import panel_front

    points = [(0.03, 0.978, 8), (0.032, 0.980, 0), (0.046, 0.978, 5), (0.02, 0.97, 3)]
    assert [p[2] for p in panel_front(points)] == [3, 8, 0]  # #5 is behind #0 here


def test_a_budget_larger_than_the_space_stops_when_it_is_exhausted_and_says_so(
    tiny_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from quantuna.study.run import run_study

    spec = tiny_spec(tiny_dir)
    spec["space"] = {"approach": ["dynamic"]}
    spec["tuning"] = {**spec["tuning"], "exit_policy": {"max_trials": 12}}
    path = write_spec(tiny_dir, spec)
    with caplog.at_level(logging.INFO, logger="quantuna.phase"):
        result = run_study(path)
    distinct = len(result.session.space.distinct_configs())
    keys = [t.user_attrs["config_key"] for t in result.study.trials]
    assert distinct < 12 and len(keys) == len(set(keys)) == distinct  # each config once, no repeat
    line = (f"the space is exhausted: all {distinct} distinct configs have a finished trial; "
            f"{distinct} trials spent, {12 - distinct} of the 12-trial budget left unused")
    assert caplog.text.count(line) == 1
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="quantuna.phase"):
        again = run_study(path)  # resumed: nothing new to try, and it says so
    assert len(again.study.trials) == distinct and caplog.text.count(line) == 1


def test_a_worker_stops_when_the_configs_left_run_elsewhere_but_a_resume_waits_for_them(
    tiny_dir: Path,
) -> None:
    import optuna

    from quantuna.spec import load_spec
    from quantuna.study.exhaustion import SpaceWatch
    from quantuna.study.session import prepare

    spec = tiny_spec(tiny_dir)
    spec["space"] = {"approach": ["dynamic"]}
    space = prepare(load_spec(write_spec(tiny_dir, spec))).space
    keys = [c.key() for c in space.distinct_configs()]
    study = optuna.create_study()
    for key in keys[:-1]:
        study.add_trial(optuna.trial.create_trial(value=1.0, user_attrs={"config_key": key}))
    other = study.ask()  # another worker measures the last config
    other.set_user_attr("config_key", keys[-1])
    watch = SpaceWatch(space, budget=40)
    spent = len(keys) - 1
    assert not watch.exhausted(study, spent)  # a resumed run: the last config has no result yet
    assert watch.exhausted(study, spent, running_too=True)  # a worker: nothing new to try
    assert "have a trial (1 still running in other workers)" in watch.line(spent)
    assert not SpaceWatch(space, budget=len(keys) - 1).exhausted(study, spent, running_too=True)
    study.tell(other, 1.0)
    assert watch.exhausted(study, len(keys))
    assert watch.line(len(keys)).endswith(
        f"have a finished trial; {len(keys)} trials spent, {40 - len(keys)} of the 40-trial "
        "budget left unused")
