"""``study.sampler``: Optuna's samplers by name, or a class of the user's own with kwargs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest
from conftest import tiny_spec

from quantuna.errors import SpecError
from quantuna.spec import load_spec
from quantuna.spec_sampler import SamplerClass
from quantuna.study.sampler import DistinctSampler, make_sampler, user_sampler


class Recorder(optuna.samplers.RandomSampler):
    """A sampler of the user's own, named as ``test_spec_sampler:Recorder``."""

    def __init__(self, seed: int | None = None, **options: Any) -> None:
        super().__init__(seed=seed)
        self.given = {"seed": seed, **options}


def _sampler(tmp_path: Path, value: Any) -> Any:
    return load_spec(tiny_spec(tmp_path, study={"sampler": value}), base_dir=tmp_path).study.sampler


@pytest.mark.parametrize("name", ["auto", "tpe", "nsga2", "gp", "random", "grid"])
def test_builtin_names_stay_names(tmp_path: Path, name: str) -> None:
    assert _sampler(tmp_path, name) == name


def test_a_module_reference_or_a_mapping_is_a_sampler_class(tmp_path: Path) -> None:
    assert _sampler(tmp_path, "optuna.samplers:QMCSampler") == SamplerClass.model_validate(
        {"class": "optuna.samplers:QMCSampler"})
    given = _sampler(tmp_path, {"class": "optuna.samplers:QMCSampler", "kwargs": {"scramble": True}})
    assert (given.cls, given.kwargs) == ("optuna.samplers:QMCSampler", {"scramble": True})


def test_a_file_reference_is_resolved_against_the_spec(tmp_path: Path) -> None:
    assert _sampler(tmp_path, "lib/mine.py:Mine").cls == f"{tmp_path / 'lib' / 'mine.py'}:Mine"
    assert _sampler(tmp_path, {"class": "/abs/mine.py:Mine"}).cls == "/abs/mine.py:Mine"


@pytest.mark.parametrize("value, message", [
    ("anneal", r"study\.sampler: not a sampler name \(auto, tpe, nsga2, gp, random, grid\).*\(got 'anneal'\)"),
    ({"class": "pkg:Cls", "args": [1]}, r"study\.sampler: args: unknown key"),
    ({"kwargs": {}}, r"study\.sampler: class: Field required"),
    (3, r"study\.sampler: give a sampler name or \{class"),
])
def test_bad_values_are_one_line_spec_errors(tmp_path: Path, value: Any, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        _sampler(tmp_path, value)


def test_the_class_gets_its_kwargs_and_the_seed_and_is_wrapped(tmp_path: Path) -> None:
    choice = SamplerClass.model_validate({"class": "optuna.samplers:RandomSampler"})
    sampler = user_sampler(choice, 5)
    assert type(sampler).__name__ == "RandomSampler"
    mine = user_sampler(SamplerClass.model_validate({"class": "test_spec_sampler:Recorder",
                                                     "kwargs": {"label": "x"}}), 5)
    assert isinstance(mine, Recorder) and mine.given == {"seed": 5, "label": "x"}
    seeded = SamplerClass.model_validate({"class": "test_spec_sampler:Recorder", "kwargs": {"seed": 9}})
    assert user_sampler(seeded, 5).given == {"seed": 9}  # type: ignore[attr-defined]  # the kwargs' seed wins
    assert isinstance(make_sampler(choice, 0, space=object()), DistinctSampler)  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="gave a dict, not an optuna.samplers.BaseSampler"):
        user_sampler(SamplerClass.model_validate({"class": "builtins:dict"}), None)
