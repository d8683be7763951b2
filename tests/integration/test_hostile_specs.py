"""Property: a randomly mutated example spec (and data) is a study start or one short line, exit 2.

Hypothesis mutates ``studies/digits.yaml`` (keys removed, added, values of other types and
ranges) and its evaluation data (dtypes, shapes, NaN, empty, string labels). ``quantuna run`` is
called in-process up to the point where it would create the study; every outcome must be:

- a study start (the run reached ``open_study``), or
- exit status 2 with exactly one line under 300 characters on stderr,

and in both cases nothing was written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import STUDIES
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import quantuna.study.run
from quantuna.cli.app import main

BASE = yaml.safe_load((STUDIES / "digits.yaml").read_text())
SPEC_NAME, EVAL_NAME = "mutated.yaml", "mutated_eval.npz"


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


PATHS = _paths(BASE)
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=400), st.lists(st.integers(-3, 300), max_size=3),
    st.dictionaries(st.text(max_size=6), st.integers(), max_size=2),
    st.sampled_from(["top1", "mse", "static", "QDQ", "U8S9", "MinMax", "auto", "gp", "x.py:f",
                     "os:system", "/etc/passwd", "../../etc/passwd", "sqlite:///x.db", 0, -1, 1.5, 2**32]),
)
MUTATION = st.tuples(st.sampled_from(["delete", "replace", "add"]), st.sampled_from(PATHS), VALUES,
                     st.text(min_size=1, max_size=12))
DATA = st.sampled_from(["keep", "float16", "int64", "strings", "nan", "inf", "empty", "shape",
                        "string-labels", "fraction-labels", "few-labels"])


class StudyStarted(Exception):
    """The run got as far as creating the study."""


def _mutate(spec: dict[str, Any], mutation: tuple[str, tuple[Any, ...], Any, str]) -> None:
    action, path, value, new_key = mutation
    parent: Any = spec
    for key in path[:-1]:
        fits_list = isinstance(parent, list) and isinstance(key, int) and key < len(parent)
        if not (fits_list or (isinstance(parent, dict) and key in parent)):
            return
        parent = parent[key]
    last = path[-1]
    if isinstance(parent, dict) and last in parent:
        if action == "delete":
            del parent[last]
        elif action == "replace":
            parent[last] = value
        elif isinstance(parent[last], dict):
            parent[last][new_key] = value
    elif isinstance(parent, list) and isinstance(last, int) and last < len(parent):
        if action == "delete":
            del parent[last]
        else:
            parent[last] = value


def _write_data(directory: Path, kind: str) -> None:
    archive = np.load(STUDIES / "data" / "digits_eval.npz")
    x, y = archive["x"], archive["y"]
    changes: dict[str, Any] = {
        "keep": (x, y), "float16": (x.astype(np.float16), y), "int64": (x.astype(np.int64), y),
        "strings": (x.astype(str), y), "nan": (np.where(x > 0.5, np.nan, x), y),
        "inf": (np.where(x > 0.5, np.inf, x), y), "empty": (x[:0], y[:0]), "shape": (x[:, :, :4], y),
        "string-labels": (x, y.astype(str)), "fraction-labels": (x, y + 0.5), "few-labels": (x, y[:5]),
    }
    new_x, new_y = changes[kind]
    np.savez(directory / "data" / EVAL_NAME, x=new_x, y=new_y)


@pytest.fixture(scope="module")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("hostile")
    for sub in ("models", "data"):
        shutil.copytree(STUDIES / sub, directory / sub)
    return directory


def _listing(directory: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in directory.rglob("*") if p.name not in (SPEC_NAME, EVAL_NAME)}


def _outcome(spec_path: Path) -> tuple[str, int | None, str]:
    """("started" | "exit", exit status, stderr + warnings) of ``quantuna run`` in-process."""
    records: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: records.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger().addHandler(handler)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                return "exit", main(["run", str(spec_path), "--no-progress"]), err.getvalue() + "".join(
                    f"{r}\n" for r in records)
            except StudyStarted:
                return "started", None, err.getvalue()
            except SystemExit as exc:  # argparse
                return "exit", int(exc.code or 0), err.getvalue()
    finally:
        logging.getLogger().removeHandler(handler)


@settings(max_examples=int(os.environ.get("QUANTUNA_HYPOTHESIS_EXAMPLES", "60")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(mutations=st.lists(MUTATION, min_size=1, max_size=3), data=DATA)
def test_a_mutated_spec_starts_a_study_or_is_one_short_line_exit_2(
    example_dir: Path, monkeypatch: pytest.MonkeyPatch, mutations: list[Any], data: str
) -> None:
    def started(*args: Any, **kwargs: Any) -> Any:
        raise StudyStarted

    monkeypatch.setattr(quantuna.study.run, "open_study", started)
    spec = copy.deepcopy(BASE)
    spec["data"]["evaluation"]["path"] = f"data/{EVAL_NAME}"
    for mutation in mutations:
        _mutate(spec, mutation)
    _write_data(example_dir, data)
    spec_path = example_dir / SPEC_NAME
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    before = _listing(example_dir)
    kind, code, stderr = _outcome(spec_path)
    event(kind if kind == "started" else f"exit {code}")
    assert _listing(example_dir) == before, "something was written"
    if kind == "exit":
        lines = stderr.strip().splitlines()
        assert code == 2, (mutations, data, stderr)
        assert len(lines) == 1 and len(lines[0]) < 300, (mutations, data, stderr)
