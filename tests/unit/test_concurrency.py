"""Workers starting together on a new study both work; Ctrl-C ends every worker within seconds."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc

from quantuna.study import storage, workers
from quantuna.study.storage import make_storage


def _stubborn() -> None:  # a worker stuck where SIGINT does not reach Python (a long C call)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    time.sleep(600)


def _started(count: int) -> list[Any]:
    context = multiprocessing.get_context("fork")
    procs = [context.Process(target=_stubborn) for _ in range(count)]
    for proc in procs:
        proc.start()
    time.sleep(0.3)  # SIG_IGN in place
    return procs


def test_workers_that_ignore_ctrl_c_are_killed_after_the_grace_period() -> None:
    procs = _started(2)
    start = time.monotonic()
    workers._stop(procs, grace=1.0)
    assert time.monotonic() - start < 5
    assert not any(p.is_alive() for p in procs) and all(p.exitcode == -signal.SIGKILL for p in procs)


def test_a_second_ctrl_c_kills_the_workers_at_once() -> None:
    procs = _started(2)
    timer = threading.Timer(0.15, os.kill, (os.getpid(), signal.SIGINT))  # the second press
    start = time.monotonic()
    timer.start()
    workers._stop(procs, grace=60.0)
    assert time.monotonic() - start < 5
    assert not any(p.is_alive() for p in procs)


def test_a_worker_that_was_never_started_does_not_break_the_stop() -> None:
    context = multiprocessing.get_context("fork")
    workers._stop([context.Process(target=_stubborn)], grace=0.1)


def test_the_table_creation_race_on_sqlite_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = optuna.storages.RDBStorage
    calls: list[int] = []

    def racing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:  # what the loser of two `quantuna run` on a new .db gets
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return real(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage.time, "sleep", lambda s: None)
    assert make_storage(f"sqlite:///{tmp_path / 'new.db'}") is not None
    assert len(calls) == 2


def test_other_operational_errors_are_not_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def broken(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        raise sqlalchemy.exc.OperationalError("x", {}, Exception("unable to open database file"))

    monkeypatch.setattr(optuna.storages, "RDBStorage", broken)
    with pytest.raises(Exception, match="unable to open"):
        make_storage(f"sqlite:///{tmp_path / 'new.db'}")
    assert len(calls) == 1


def test_a_ctrl_c_swallowed_by_a_gc_callback_prints_no_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    import gc
    import weakref

    from quantuna.study.interrupt import Interrupt

    class Thing:
        pass

    def raising(ref: Any) -> None:  # what SIGINT does when it lands in SQLAlchemy's _collection_gced
        raise KeyboardInterrupt

    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with Interrupt().installed():
            thing = Thing()
            ref = weakref.ref(thing, raising)
            del thing
            gc.collect()
            assert ref() is None
            sys.unraisablehook(type("Info", (), {"exc_value": ValueError("other")})())
    finally:
        sys.unraisablehook = previous
    assert [type(i.exc_value) for i in seen] == [ValueError]  # others still reach the old hook
    assert "Traceback" not in capsys.readouterr().err


def test_the_jobs_parent_drops_a_ctrl_c_that_lands_in_a_gc_callback(capsys: pytest.CaptureFixture[str]) -> None:
    """The ``--jobs`` parent waits for its workers with the same quiet hook as a trial loop: a
    Ctrl-C there printed "Exception ignored in ... _collection_gced" with a traceback."""
    import gc
    import weakref

    from quantuna.study.interrupt import quiet_unraisable_interrupts

    class Thing:
        pass

    def raising(ref: Any) -> None:
        raise KeyboardInterrupt

    seen: list[Any] = []
    previous = sys.unraisablehook
    sys.unraisablehook = seen.append
    try:
        with quiet_unraisable_interrupts():
            thing = Thing()
            ref = weakref.ref(thing, raising)
            del thing
            gc.collect()
            assert ref() is None
        sys.unraisablehook(type("Info", (), {"exc_value": KeyboardInterrupt()})())  # after: as before
    finally:
        sys.unraisablehook = previous
    assert [type(i.exc_value) for i in seen] == [KeyboardInterrupt]
    assert "Traceback" not in capsys.readouterr().err
