"""Several `quantuna run` opening a new SQLite study at once: every one of them works."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import optuna

from quantuna.study.storage import make_storage


def _open(url: str, barrier: Any, results: Any) -> None:
    barrier.wait()
    try:
        optuna.create_study(study_name="s", storage=make_storage(url), load_if_exists=True)
        results.put("ok")
    except Exception as exc:  # noqa: BLE001
        results.put(f"{type(exc).__name__}: {exc}")


def test_four_processes_open_a_new_sqlite_study_at_once(tmp_path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    context = multiprocessing.get_context("fork")
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        barrier, results = context.Barrier(4), context.Queue()
        procs = [context.Process(target=_open, args=(url, barrier, results)) for _ in range(4)]
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(timeout=120)
        assert [results.get(timeout=5) for _ in procs] == ["ok"] * 4
