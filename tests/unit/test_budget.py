"""The trial budget counts what a user was charged for: complete, pruned, and failed with a stated
reason; a trial killed or interrupted (failed with no reason) and a running one cost nothing. On
an RDB storage the count is one SQL statement; it must agree with the trials' own states."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from quantuna.study.attrs import FAIL_REASON
from quantuna.study.budget import FINISHED, count_spent, is_spent
from quantuna.study.storage import make_storage

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # ask() outside optimize (heartbeat)


@pytest.mark.parametrize("where", ["sqlite", "in-memory"])
def test_the_budget_counts_complete_pruned_and_reasoned_failures_only(tmp_path: Path, where: str) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 'b.db'}") if where == "sqlite" else None
    study = optuna.create_study(storage=storage)
    for kind in ["complete", "pruned", "failed with a reason", "killed", "complete", "killed"]:
        trial = study.ask()
        if kind == "complete":
            study.tell(trial, 1.0)
        elif kind == "pruned":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            if kind == "failed with a reason":
                trial.set_user_attr(FAIL_REASON, "onnxruntime cannot quantize it")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
    study.ask()  # running: not spent yet
    study.enqueue_trial({})  # waiting: not spent
    expected = sum(1 for t in study.get_trials(states=FINISHED) if is_spent(t))
    assert expected == 4
    assert count_spent(study) == 4
    other = optuna.create_study(storage=study._storage)  # another study on the same storage
    other.tell(other.ask(), 1.0)
    assert count_spent(study) == 4 and count_spent(other) == 1
