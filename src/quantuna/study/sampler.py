"""``DistinctSampler``: the spec's Optuna sampler, kept from proposing a configuration the study
already has.

Samplers repeat points of categorical spaces (TPE gave 63-139 distinct configs in 200 trials on
the digits space). A repeat costs no measurement (the trial reuses the first one's values) but it
spends a trial of the budget. This wrapper draws each trial's whole configuration at its first
``suggest``: the base sampler proposes (its multivariate ``sample_relative`` first, then
``sample_independent`` for the knobs it left), once; when the proposal is a config some other
trial of the study already has, the trial takes the unused config nearest to it (fewest knobs
changed; ties drawn with the seed) instead of asking the base sampler again (re-running TPE in a
loop cost more than the digits measurements did). It first searches outward from the proposal,
one knob moved at a time (the knobs a move makes the space ask for at their first value), and
draws one of the nearest usable configs; only when none is found within a few moves does it
compare the proposal with every distinct config of the space, enumerated once per space. Configs of a setting that failed for this model
(:mod:`quantuna.study.failures`) count as used. Only when the space is exhausted does a trial repeat a config. The trial's
``suggest_categorical`` calls then return the drawn values, so the study's params, attrs and
samplers' histories stay plain Optuna.

:func:`make_sampler` builds the sampler a spec names (one of Optuna's, or a class of your own:
:func:`user_sampler`), wrapped; :class:`quantuna.study.worker_sampler.WorkerSampler` seeds each
worker's copy differently.
"""

from __future__ import annotations

import importlib.util
import inspect
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from quantuna._compat import (
    experimental_quiet,
    prime_trial_read,
    sharing_trial_read,
    trial_id,
    trials_of_this_trial,
)
from quantuna._util import import_reference
from quantuna.config import QuantConfig
from quantuna.errors import SpecError
from quantuna.space import SearchSpace
from quantuna.spec_sampler import SamplerClass
from quantuna.study import attrs
from quantuna.study.failures import failed_settings, is_blocked

DEFAULT_ATTEMPTS = 1  # proposals asked of the base sampler before moving to the nearest unused config
NEAR_MOVES = 3  # knob moves searched around a repeated proposal before the whole space is
NEAR_BUILDS = 400  # configs built in that search, at most (~50 us each)


class DistinctSampler(BaseSampler):
    """Wrap ``base`` so that a trial's config differs from every other trial's while the space
    has unused configs.

    Args:
        base: the sampler that proposes (TPE, random, NSGA-II, GP, one of your own...).
        space: the study's search space, or a function that returns it (read at each trial, so
            :class:`quantuna.StudyObjective` can pass the space it has after ``prepare``).
        seed: seeds the draw among equally near unused configs.
        attempts: proposals asked of ``base`` before moving to the nearest unused config.
        prefix: the prefix of quantuna's param names, for a joint search where
            :func:`quantuna.suggest_config` names them ``<prefix><knob>``; your own params go to
            ``base`` untouched.

    Example (a joint search that never repeats a quantization config; it runs in the tests):
        >>> import optuna, quantuna
        >>> space = quantuna.search_space("studies/digits.yaml")
        >>> sampler = quantuna.DistinctSampler(optuna.samplers.TPESampler(seed=0), space,
        ...                                    prefix="quantuna.")
        >>> study = optuna.create_study(sampler=sampler)
        >>> for _ in range(5):
        ...     trial = study.ask()
        ...     told = study.tell(trial, len(quantuna.suggest_config(trial, space).op_types))
        >>> len({t.user_attrs["config_key"] for t in study.trials})
        5
    """

    def __init__(
        self, base: BaseSampler, space: SearchSpace | Callable[[], SearchSpace],
        seed: int | None = None, attempts: int = DEFAULT_ATTEMPTS, prefix: str = "",
    ) -> None:
        self.base = base
        self._space_of = space if callable(space) else (lambda: space)
        self._prefix = prefix
        self._rng = random.Random(seed)
        self._attempts = max(1, attempts)
        self._drawn: dict[int, dict[str, Any]] = {}  # trial id -> its params
        self._tables: tuple[Any, ...] | None = None  # (space, its distinct configs, their codes)
        self._values: dict[str, list[Any]] = {}  # each knob's values, as the last proposal saw them

    # --- the proposal ----------------------------------------------------------------------

    def _taken(self, study: optuna.Study, trial: FrozenTrial) -> set[str]:
        """Config keys of the study's other trials (running ones included: they will measure),
        from the storage read this trial shares with TPE (made after its ``ask``)."""
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.FAIL)
        return {
            t.user_attrs[attrs.CONFIG_KEY]
            for t in trials_of_this_trial(study, states)
            if t.number != trial.number and attrs.CONFIG_KEY in t.user_attrs
        }

    def _propose(self, study: optuna.Study, trial: FrozenTrial) -> tuple[dict[str, Any], QuantConfig]:
        study = sharing_trial_read(study)  # one storage read per trial for the base sampler too
        relative = self.base.sample_relative(
            study, trial, self.base.infer_relative_search_space(study, trial)
        )
        params: dict[str, Any] = {}

        def choose(knob: str, values: Sequence[Any]) -> Any:
            name = self._prefix + knob
            value = relative.get(name)
            if value is None or value not in values:
                dist = CategoricalDistribution(list(values))
                value = self.base.sample_independent(study, trial, name, dist)
            params[name] = value
            self._values[knob] = list(values)
            return value

        return params, self._space_of().build(choose)

    def _unused(self, taken: set[str], failed: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The params of every distinct config of the space no trial has and no failed setting
        blocks (the space enumerates them once, not once per trial)."""
        return [params for params, config in self._space_of().distinct()
                if config.key() not in taken and not is_blocked(config, failed)]

    def _table(self) -> tuple[list[tuple[dict[str, Any], QuantConfig]], list[str], dict[str, dict[Any, int]], Any]:
        """The space's distinct configs and their params as a matrix of value indices, one
        column per knob (-1: the knob is not asked), built once per space, so that
        :meth:`_nearest` compares a proposal with all of them at once."""
        space = self._space_of()
        if self._tables is None or self._tables[0] is not space:
            distinct = space.distinct()
            knobs = sorted({k for params, _ in distinct for k in params})
            index: dict[str, dict[Any, int]] = {k: {} for k in knobs}
            codes = np.full((len(distinct), len(knobs)), -1, dtype=np.int32)
            for row, (params, _) in enumerate(distinct):
                for col, knob in enumerate(knobs):
                    if knob in params:
                        codes[row, col] = index[knob].setdefault(params[knob], len(index[knob]))
            self._tables = (space, distinct, knobs, index, codes)
        return self._tables[1:]

    def _draw(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        taken = self._taken(study, trial)
        failed = failed_settings(study)  # settings that fail for this model, by any worker

        def usable(config: QuantConfig) -> bool:
            return config.key() not in taken and not is_blocked(config, failed)

        params: dict[str, Any] = {}
        for _ in range(self._attempts):
            params, config = self._propose(study, trial)
            if usable(config):
                return params
        proposal = {k[len(self._prefix):]: v for k, v in params.items()}
        near = self._few_knobs_away(proposal, usable)
        if near:
            return {self._prefix + k: v for k, v in self._rng.choice(near).items()}
        distinct = self._table()[0]
        unused = [i for i, (_, c) in enumerate(distinct)
                  if c.key() not in taken and not is_blocked(c, failed)]
        if not unused:  # the space is exhausted: the trial repeats a config (and reuses it)
            repeats = [{self._prefix + k: v for k, v in p.items()} for p in self._unused(set(), failed)]
            return params if not repeats or params in repeats else dict(self._rng.choice(repeats))
        return {self._prefix + k: v for k, v in self._nearest(proposal, unused).items()}

    def _few_knobs_away(self, proposal: dict[str, Any],
                        usable: Callable[[QuantConfig], bool]) -> list[dict[str, Any]]:
        """The params of the usable configs fewest knob moves away from the proposal, searched
        outward (one knob's value changed per move, the knobs a move makes the space ask for at
        their first value) up to :data:`NEAR_MOVES` moves and :data:`NEAR_BUILDS` configs built,
        so that a repeat needs no enumeration of the space; [] when none is found that near
        (:meth:`_nearest` then compares the proposal with every distinct config)."""
        seen: set[str] = set()
        frontier = [proposal]
        built = 0
        for _ in range(NEAR_MOVES):
            found: dict[str, dict[str, Any]] = {}
            following: list[dict[str, Any]] = []
            for start in frontier:
                for knob, value in start.items():
                    for other in self._values.get(knob, ()):
                        if other == value or built >= NEAR_BUILDS:
                            continue
                        params, config = self._moved(start, knob, other)
                        built += 1
                        if params.get(knob) != other or config.key() in seen:
                            continue
                        seen.add(config.key())
                        following.append(params)
                        if usable(config):
                            found.setdefault(config.key(), params)
            if found:
                return [found[key] for key in sorted(found)]
            frontier = following
        return []

    def _moved(self, proposal: dict[str, Any], knob: str, value: Any) -> tuple[dict[str, Any], QuantConfig]:
        """The proposal with ``knob`` set to ``value`` (its params and config), built."""
        params: dict[str, Any] = {}

        def choose(name: str, values: Sequence[Any]) -> Any:
            self._values[name] = list(values)  # a knob the proposal did not ask can move next
            wanted = value if name == knob else proposal.get(name, values[0])
            params[name] = wanted if wanted in values else values[0]
            return params[name]

        return params, self._space_of().build(choose)

    def _nearest(self, proposal: dict[str, Any], unused: list[int]) -> dict[str, Any]:
        """The unused config (rows of :meth:`_table`) whose params differ from the proposal's in
        the fewest knobs (ties drawn with the seeded generator): the base sampler's choice, moved
        as little as needed."""
        distinct, knobs, index, codes = self._table()
        wanted = np.array([index[k].get(proposal[k], -2) if k in proposal else -1 for k in knobs],
                          dtype=np.int32)  # -2: a value no config of the space has
        rows = np.asarray(unused)
        distances = (codes[rows] != wanted).sum(axis=1) + sum(k not in index for k in proposal)
        ties = rows[distances == distances.min()]
        return dict(distinct[self._rng.choice(list(ties))][0])

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
        drawn = self._drawn.get(trial_id(trial))
        if drawn is None:
            drawn = self._drawn[trial_id(trial)] = self._draw(study, trial)
        choices = getattr(param_distribution, "choices", None)
        if param_name in drawn and (choices is None or drawn[param_name] in choices):
            return drawn[param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        prime_trial_read(study, trial)  # the ask's read, not a second one
        self.base.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self._drawn.pop(trial_id(trial), None)
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self._rng = random.Random()


def make_sampler(
    name: str | SamplerClass, seed: int | None, space: SearchSpace | None = None
) -> optuna.samplers.BaseSampler:
    """The Optuna sampler a spec names; ``auto`` is a multivariate TPE (conditional-space aware);
    a :class:`~quantuna.spec_sampler.SamplerClass` is your own class (see :func:`user_sampler`).

    Given the ``space``, every sampler but ``grid`` is wrapped in a :class:`DistinctSampler`, so
    that no trial repeats a config while the space has unused ones.
    """
    if space is not None and name != "grid":
        base = make_sampler(name, seed)
        return DistinctSampler(base, space, seed)
    if isinstance(name, SamplerClass):
        return user_sampler(name, seed)
    if name in ("auto", "tpe"):
        with experimental_quiet():  # multivariate and group are experimental in Optuna 5
            return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.BruteForceSampler(seed=seed)


def user_sampler(choice: SamplerClass, seed: int | None, where: str = "spec") -> BaseSampler:
    """Your sampler class called with the spec's ``kwargs`` (and ``seed=`` when it takes one and
    the kwargs give none).

    Raises:
        SpecError: the class cannot be imported or called, or it is not an Optuna sampler.
    """
    factory = import_reference(choice.cls, where=f"{where}: study.sampler")
    kwargs = dict(choice.kwargs)
    if "seed" not in kwargs and _takes_seed(factory):
        kwargs["seed"] = seed
    try:
        with experimental_quiet():  # the spec chose its sampler, experimental or not
            sampler = factory(**kwargs)
    except Exception as exc:
        raise SpecError(
            f"{where}: study.sampler: {choice.cls}(**{kwargs}) failed: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(sampler, BaseSampler):
        raise SpecError(
            f"{where}: study.sampler: {choice.cls} gave a {type(sampler).__name__}, not an "
            "optuna.samplers.BaseSampler"
        )
    return sampler


def _takes_seed(factory: Any) -> bool:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return "seed" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


SAMPLER_MODULES = {"gp": ("torch", "scipy")}  # what Optuna's samplers import on first use


def sampler_missing_modules(name: str | SamplerClass) -> list[str]:
    """The modules the named sampler needs that cannot be imported here."""
    if not isinstance(name, str):
        return []
    return [m for m in SAMPLER_MODULES.get(name, ()) if importlib.util.find_spec(m) is None]
