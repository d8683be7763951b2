"""``DistinctSampler``: the spec's Optuna sampler, kept from proposing a configuration the study
already has.

Samplers repeat points of categorical spaces (TPE gave 63-139 distinct configs in 200 trials on
the digits space). A repeat costs no measurement (the trial reuses the first one's values) but it
spends a trial of the budget. This wrapper draws each trial's whole configuration at its first
``suggest``: the base sampler proposes (its multivariate ``sample_relative`` first, then
``sample_independent`` for the knobs it left), and while the proposal is a config some other
trial of the study already has, it proposes again, up to ``attempts`` times; after that it takes
an unused config of the space at random. Only when the space is exhausted does a trial repeat a
config. The trial's ``suggest_categorical`` calls then return the drawn values, so the study's
params, attrs and samplers' histories stay plain Optuna.

:func:`make_sampler` builds the sampler a spec names, wrapped.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from quantuna.space import SearchSpace

DEFAULT_ATTEMPTS = 12


class DistinctSampler(BaseSampler):
    """Wrap ``base`` so that a trial's config differs from every other trial's while the space
    has unused configs.

    Args:
        base: the sampler that proposes (TPE, random, NSGA-II, GP...).
        space: the study's search space (read at each trial, so sensitive-node knobs added after
            the sampler was made are seen).
        seed: seeds the fallback draw among unused configs.
        attempts: proposals asked of ``base`` before the fallback.
    """

    def __init__(
        self, base: BaseSampler, space: SearchSpace, seed: int | None = None,
        attempts: int = DEFAULT_ATTEMPTS,
    ) -> None:
        self.base = base
        self._space = space
        self._rng = random.Random(seed)
        self._attempts = max(1, attempts)
        self._drawn: dict[int, dict[str, Any]] = {}  # trial id -> its params

    # --- the proposal ----------------------------------------------------------------------

    def _taken(self, study: optuna.Study, trial: FrozenTrial) -> set[str]:
        """Config keys of the study's other trials (running ones included: they will measure)."""
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)
        return {
            t.user_attrs["config_key"]
            for t in study.get_trials(deepcopy=False, states=states)
            if t.number != trial.number and "config_key" in t.user_attrs
        }

    def _propose(self, study: optuna.Study, trial: FrozenTrial) -> tuple[dict[str, Any], str]:
        relative = self.base.sample_relative(
            study, trial, self.base.infer_relative_search_space(study, trial)
        )
        params: dict[str, Any] = {}

        def choose(name: str, values: Sequence[Any]) -> Any:
            value = relative.get(name)
            if value is None or value not in values:
                dist = CategoricalDistribution(list(values))
                value = self.base.sample_independent(study, trial, name, dist)
            params[name] = value
            return value

        return params, self._space.build(choose).key()

    def _draw(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        taken = self._taken(study, trial)
        params: dict[str, Any] = {}
        for _ in range(self._attempts):
            params, key = self._propose(study, trial)
            if key not in taken:
                return params
        unused = [p for p, config in self._space.enumerate() if config.key() not in taken]
        if not unused:
            return params  # the space is exhausted: the trial repeats a config (and reuses it)
        return dict(self._rng.choice(unused))

    # --- BaseSampler ---------------------------------------------------------------------------

    def infer_relative_search_space(
        self, study: optuna.Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return {}  # the whole config is drawn at the trial's first suggest

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        drawn = self._drawn.get(trial._trial_id)
        if drawn is None:
            drawn = self._drawn[trial._trial_id] = self._draw(study, trial)
        choices = getattr(param_distribution, "choices", None)
        if param_name in drawn and (choices is None or drawn[param_name] in choices):
            return drawn[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._drawn.pop(trial._trial_id, None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = random.Random()


def make_sampler(
    name: str, seed: int | None, space: SearchSpace | None = None
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a spec names; ``auto`` is a multivariate TPE (conditional-space aware).

    Given the ``space``, every sampler but ``grid`` is wrapped in a :class:`DistinctSampler`, so
    that no trial repeats a config while the space has unused ones.
    """
    if space is not None and name != "grid":
        base = make_sampler(name, seed)
        return DistinctSampler(base, space, seed, attempts=2 if name == "gp" else DEFAULT_ATTEMPTS)
    if name in ("auto", "tpe"):
        with warnings.catch_warnings():  # multivariate and group are experimental in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.BruteForceSampler(seed=seed)
