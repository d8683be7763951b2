"""The examples in the docstrings of the "from your own Optuna code" API run, from a copy of the
repository's ``studies/`` (so what they write lands in a temporary directory)."""

from __future__ import annotations

import doctest
import importlib
import shutil
from pathlib import Path

import pytest
from conftest import STUDIES

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.mark.parametrize("module", ["quantuna.study.objective", "quantuna.study.joint", "quantuna.study.sampler"])
def test_docstring_examples_run(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    import quantuna

    for sub in ("models", "data"):
        shutil.copytree(STUDIES / sub, tmp_path / "studies" / sub)
    shutil.copy(STUDIES / "digits.yaml", tmp_path / "studies" / "digits.yaml")
    monkeypatch.chdir(tmp_path)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        outcome = doctest.testmod(importlib.import_module(module), extraglobs={"quantuna": quantuna, "optuna": optuna},
                                  optionflags=doctest.ELLIPSIS, report=True)
    finally:
        optuna.logging.set_verbosity(optuna.logging.INFO)
    assert outcome.attempted > 0
    assert outcome.failed == 0
