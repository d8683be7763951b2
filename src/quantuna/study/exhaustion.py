"""When the search space is exhausted: every distinct config has a finished trial.

A budget larger than the space would otherwise re-run configs (each repeat reuses the first
measurement) until the budget is spent. :class:`SpaceWatch` tells the run when nothing new is
left, so it stops and says so. It is checked after every trial, so it is cheap: the space's
distinct configs are counted once (and only up to the budget: a larger space cannot be exhausted
within it), again only when the settings that fail for the model change; the trials are scanned
only once the spent trials could cover the space.

A config counts as done when a trial of it is spent (:func:`quantuna.study.budget.is_spent`:
complete, pruned, or failed for a stated reason), or when a setting that fails for this model
blocks it (the sampler never proposes it). After a trial, a worker also stops when the configs
left are running in other workers: it has nothing new to try, and drawing again would only repeat
a config (a repeat is instant, so a worker would spin through the budget while another one
measures). A worker that dies leaves its trial to the heartbeat; the next run resumes it.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from quantuna.space import SearchSpace
from quantuna.study import attrs
from quantuna.study.budget import FINISHED, is_spent
from quantuna.study.failures import failed_settings, is_blocked


class SpaceWatch:
    """Whether a study's space is exhausted, checked cheaply after each trial.

    Args:
        space: the study's search space (with its node knobs, as the sampler has it).
        budget: the study's total trial budget: only a space of at most that many open configs
            is enumerated whole.
    """

    def __init__(self, space: SearchSpace, budget: int) -> None:
        self.space = space
        self.budget = budget
        self._failed: list[dict[str, Any]] | None = None
        self._open: list[str] | None = None  # the open configs' keys (None: more than the budget)
        self.blocked = 0  # distinct configs a failed setting blocks (counted with the open ones)
        self.running = 0  # open configs without a finished trial, running in other workers

    def _count(self, failed: list[dict[str, Any]]) -> None:
        """The open (not blocked) distinct configs, enumerated up to ``budget + 1`` of them."""
        self._failed = failed
        seen: set[str] = set()
        open_keys: list[str] = []
        self.blocked = 0
        for _, config in self.space.enumerate():
            key = config.key()
            if key in seen:
                continue
            seen.add(key)
            if is_blocked(config, failed):
                self.blocked += 1
                continue
            open_keys.append(key)
            if len(open_keys) > self.budget:
                self._open = None  # more configs than the budget: cannot be exhausted
                return
        self._open = open_keys

    @property
    def configs(self) -> int | None:
        """How many distinct configs are open (None: more than the budget)."""
        return None if self._open is None else len(self._open)

    def exhausted(self, study: optuna.Study, spent: int, *, running_too: bool = False) -> bool:
        """Whether every open distinct config has a spent trial (``spent``: the study's count);
        with ``running_too``, a config running in another trial counts as well."""
        failed = failed_settings(study)
        if self._failed is None or failed != self._failed:
            self._count(failed)
        if self._open is None or (spent < len(self._open) and not running_too):
            return False
        done, running = set(), set()
        states = (*FINISHED, TrialState.RUNNING) if running_too else FINISHED
        for t in study.get_trials(deepcopy=False, states=states):
            if t.state == TrialState.RUNNING:
                running.add(t.user_attrs.get(attrs.CONFIG_KEY))
            elif is_spent(t):
                done.add(t.user_attrs.get(attrs.CONFIG_KEY))
        self.running = sum(1 for key in self._open if key not in done and key in running)
        return all(key in done or key in running for key in self._open)

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, spent: int) -> bool:
        """:meth:`exhausted`, asked only when it may have changed: the spent trials could cover
        the open configs, or the trial failed or repeated a measurement (a failed setting, here
        or in another worker, may have blocked more configs)."""
        if self._failed is not None:
            changed = trial.state == TrialState.FAIL or isinstance(
                trial.user_attrs.get(attrs.REUSED_FROM), int)
            if not changed and (self._open is None or spent < len(self._open)):
                return False
        return self.exhausted(study, spent, running_too=True)

    def line(self, spent: int) -> str:
        """What the run says when it stops on it: configs, trials spent, budget left unused."""
        blocked = (f" ({self.blocked} more skipped: a setting that fails for this model)"
                   if self.blocked else "")
        have = (f"a trial ({self.running} still running in other workers)" if self.running
                else "a finished trial")
        return (f"the space is exhausted: all {self.configs} distinct configs have {have}"
                f"{blocked}; {spent} trials spent, {max(0, self.budget - spent)} of the "
                f"{self.budget}-trial budget left unused")
