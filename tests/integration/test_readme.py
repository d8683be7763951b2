"""The README's "From your own Optuna code" examples run as written, from a copy of the repository's
``studies/`` (so their SQLite files and pruned models land in a temporary directory)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import optuna
import pytest
from conftest import ROOT, STUDIES

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
SECTION = "## From your own Optuna code"


def _examples() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.index("\n## ", start + len(SECTION))
    return re.findall(r"```python\n(.*?)```", text[start:end], flags=re.DOTALL)


def test_the_section_has_the_two_examples() -> None:
    examples = _examples()
    assert len(examples) == 2
    assert "quantuna.StudyObjective(" in examples[0] and "quantuna.load_results(study)" in examples[0]
    assert "quantuna.suggest_config(" in examples[1] and "quantuna.set_accuracy_constraint(" in examples[1]


@pytest.fixture()
def repo_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for sub in ("models", "data"):
        shutil.copytree(STUDIES / sub, tmp_path / "studies" / sub)
    shutil.copy(STUDIES / "digits.yaml", tmp_path / "studies" / "digits.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_objective_example_runs(repo_copy: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_examples()[0], "README.md: StudyObjective", "exec"), namespace)  # noqa: S102
    study = namespace["study"]
    assert isinstance(study, optuna.Study) and len(study.trials) == 20
    assert "baseline" in study.user_attrs and (repo_copy / "mine.db").is_file()
    assert namespace["best"].number in {t.number for t in namespace["result"].trials}  # type: ignore[attr-defined]


def test_the_joint_search_example_runs(repo_copy: Path) -> None:
    namespace: dict[str, object] = {}
    exec(compile(_examples()[1], "README.md: joint search", "exec"), namespace)  # noqa: S102
    study = namespace["study"]
    assert isinstance(study, optuna.Study) and len(study.trials) == 20
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert complete and all("my.prune_ratio" in t.params for t in complete)
    assert all("constraint" in t.user_attrs for t in complete)
    assert namespace["feasible"]
