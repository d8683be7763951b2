"""The study's trial budget: what counts as spent, for one worker or many."""

from __future__ import annotations

import optuna

from quantuna._compat import count_rdb_trials, study_storage
from quantuna.study.attrs import FAIL_REASON

FINISHED = (
    optuna.trial.TrialState.COMPLETE,
    optuna.trial.TrialState.PRUNED,
    optuna.trial.TrialState.FAIL,
)


def is_spent(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a finished trial used up budget: complete (measured, reused or stopped early as
    hopeless), pruned, or failed for a stated reason.

    A trial interrupted by Ctrl-C or a killed worker has no reason and does not count, so the
    study's budget holds when it is resumed.
    """
    return trial.state != optuna.trial.TrialState.FAIL or FAIL_REASON in trial.user_attrs


def count_spent(study: optuna.Study) -> int:
    """Trials that used up budget (see :func:`is_spent`): on an ``RDBStorage`` one ``COUNT``
    statement (it runs after every trial; loading the trials costs seven statements), on other
    storages a count over the study's trials."""
    done = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)  # + FAIL with a reason
    spent = count_rdb_trials(study_storage(study), study, done, FAIL_REASON)
    if spent is not None:
        return spent
    return sum(1 for t in study.get_trials(deepcopy=False, states=FINISHED) if is_spent(t))
