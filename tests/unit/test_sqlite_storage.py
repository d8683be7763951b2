"""A SQLite study storage commits without waiting for the disk (write-ahead log, synchronous=NORMAL),
from the statements that create Optuna's tables on; an existing file's schema is still checked."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy

from quantuna.errors import SpecError
from quantuna.study.storage import make_storage


def test_sqlite_storage_uses_the_write_ahead_log(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    with storage.engine.connect() as connection:  # type: ignore[attr-defined]
        assert connection.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(sqlalchemy.text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_optunas_tables_in_a_new_file_are_made_on_write_ahead_log_connections(tmp_path: Path) -> None:
    seen: list[tuple[str, int]] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().upper().startswith("CREATE TABLE"):
            raw = conn.connection.dbapi_connection  # sqlite3 itself: no event, no recursion
            seen.append((raw.execute("PRAGMA journal_mode").fetchone()[0],
                         raw.execute("PRAGMA synchronous").fetchone()[0]))

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    try:
        make_storage(f"sqlite:///{tmp_path / 'new.db'}")
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", record)
    assert seen and set(seen) == {("wal", 1)}  # no CREATE waited for the disk


def test_an_existing_file_of_an_older_optuna_schema_is_still_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    make_storage(url)  # a new file: its schema is Optuna's own
    with sqlite3.connect(tmp_path / "old.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'v2.4.0.a'")  # as an old Optuna left it
    with pytest.raises(SpecError, match="no longer compatible"):
        make_storage(url)
