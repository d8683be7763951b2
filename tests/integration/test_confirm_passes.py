"""The confirm phase's passes: a later pass times only the trials the earlier figures brought in,
and no model is rebuilt twice (real onnxruntime and Optuna, the tiny model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import tiny_spec, write_spec

from quantuna.study import confirm
from quantuna.study.run import run_study

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


def test_a_second_pass_times_only_the_new_candidates_and_keeps_the_first_pass_figures(
    tiny_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_study(write_spec(tiny_dir, tiny_spec(tiny_dir)), n_trials=6, confirm=False)
    distinct: dict[str, Any] = {}
    for t in result.trials:
        if not t.config.is_fp32 and t.model_sha256:
            distinct.setdefault(t.model_sha256, t)
    first, second = list(distinct.values())[:2]
    # the first pass's figures bring `second` in (as a front that moved would)
    lists = iter([[first], [first, second], [first, second]])
    monkeypatch.setattr(confirm, "candidates", lambda result, limit: next(lists))
    timed: list[list[str]] = []
    real_retime = confirm.retime

    def retime(paths: list[Path], *args: Any) -> Any:
        timed.append([p.name for p in paths])
        return real_retime(paths, *args)

    rebuilt: list[int] = []
    real_rebuild = confirm._rebuild

    def rebuild(session: Any, trial: Any, directory: Path) -> Path:
        rebuilt.append(trial.number)
        return real_rebuild(session, trial, directory)

    monkeypatch.setattr(confirm, "retime", retime)
    monkeypatch.setattr(confirm, "_rebuild", rebuild)
    assert result.session is not None
    out = confirm.confirm_front(result.study, result.session, result)

    assert timed == [[f"confirm-{first.number}.onnx"], [f"confirm-{second.number}.onnx"]]
    assert rebuilt == [first.number, second.number]  # each model built once
    record = out.study.user_attrs["confirmed"]
    assert set(record["trials"]) == {str(first.number), str(second.number)}
    assert all(f["rebuilt_identical"] for f in record["trials"].values())
    assert {t.number for t in out.trials if t.confirmed} >= {first.number, second.number}
    assert not list((result.session.spec.workdir / "models").glob("confirm-*"))  # removed at the end
