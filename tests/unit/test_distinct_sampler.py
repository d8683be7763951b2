"""The distinct-config guard asks its base sampler once per trial and moves a repeated proposal to
the nearest unused config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_spec, write_spec

import quantuna
from quantuna.study.sampler import DistinctSampler

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


class Stuck(optuna.samplers.RandomSampler):
    """Always proposes each knob's first value; counts how often it is asked."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.relative_calls = 0

    def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        self.relative_calls += 1
        return {}

    def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> Any:
        return distribution.choices[0]


def test_a_repeat_moves_to_the_nearest_unused_config_without_asking_again(tiny_dir: Path) -> None:
    space = quantuna.search_space(write_spec(tiny_dir, tiny_spec(tiny_dir)))
    distinct = space.distinct_configs()
    base = Stuck()
    study = optuna.create_study(sampler=DistinctSampler(base, space, seed=0))
    seen = []
    for _ in range(len(distinct)):
        trial = study.ask()
        config = space.suggest(trial)
        trial.set_user_attr("config_key", config.key())
        study.tell(trial, 0.0)
        seen.append((dict(trial.params), config.key()))
    assert len({key for _, key in seen}) == len(distinct)  # the whole space, no repeat
    assert base.relative_calls == len(distinct)  # one proposal per trial, never a loop
    first = seen[0][0]
    assert sum(first[k] != v for k, v in seen[1][0].items()) == 1  # one knob moved, the nearest


def test_a_repeat_whose_neighbours_are_taken_moves_further_without_enumerating(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = quantuna.search_space(write_spec(tiny_dir, tiny_spec(tiny_dir)))
    size = len(space.distinct_configs())

    def no_enumeration() -> None:
        raise AssertionError("the space was enumerated")

    monkeypatch.setattr(space, "distinct", no_enumeration)
    monkeypatch.setattr(space, "enumerate", no_enumeration)
    study = optuna.create_study(sampler=DistinctSampler(Stuck(), space, seed=0))
    seen = []
    for _ in range(min(size - 1, 8)):  # the same proposal every time: each moves further out
        trial = study.ask()
        config = space.suggest(trial)
        trial.set_user_attr("config_key", config.key())
        study.tell(trial, 0.0)
        seen.append((dict(trial.params), config.key()))
    assert len({key for _, key in seen}) == len(seen)  # never a repeat, never an enumeration
    first = seen[0][0]
    moves = [sum(p.get(k) != v for k, v in first.items()) for p, _ in seen]
    assert moves[0] == 0 and 1 in moves and max(moves) >= 2  # one knob, then two knobs away
