"""``WorkerSampler``: the study's sampler, built with each worker's own seed at its first trial
(:func:`worker_seed`), so that workers sharing a study do not propose the same configs."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from quantuna._compat import experimental_quiet


def worker_seed(seed: int | None, first_trial: int) -> int | None:
    """The sampler seed of a worker whose first trial is ``first_trial`` (trial 0: ``seed``)."""
    if seed is None or first_trial == 0:
        return seed
    digest = hashlib.sha256(f"quantuna-worker:{seed}:{first_trial}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class WorkerSampler(BaseSampler):
    """The study's sampler, built with this worker's seed when its first trial starts.

    Args:
        build: ``build(seed)`` returns the sampler the spec names.
        seed: the spec's seed (None: unseeded).

    Attributes:
        trial_started: called with each new trial as soon as it exists in the storage.
    """

    def __init__(self, build: Callable[[int | None], BaseSampler], seed: int | None) -> None:
        self._build = build
        self._seed = seed
        self._inner: BaseSampler | None = None
        self.trial_started: list[Callable[[FrozenTrial], None]] = []

    def _sampler(self, first_trial: int = 0) -> BaseSampler:
        if self._inner is None:
            with experimental_quiet():  # the spec chose its sampler's experimental options
                self._inner = self._build(worker_seed(self._seed, first_trial))
        return self._inner

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        for hook in self.trial_started:
            hook(trial)
        self._sampler(trial.number).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return self._sampler(trial.number).infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        return self._sampler(trial.number).sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: Any
    ) -> Any:
        return self._sampler(trial.number).sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(
        self,
        study: optuna.Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._sampler(trial.number).after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._sampler().reseed_rng()
