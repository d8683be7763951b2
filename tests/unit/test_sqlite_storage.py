"""A SQLite study storage commits without waiting for the disk (write-ahead log, synchronous=NORMAL)."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy

from quantuna.study.storage import make_storage


def test_sqlite_storage_uses_the_write_ahead_log(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}")
    with storage.engine.connect() as connection:  # type: ignore[attr-defined]
        assert connection.execute(sqlalchemy.text("PRAGMA journal_mode")).scalar() == "wal"
        assert connection.execute(sqlalchemy.text("PRAGMA synchronous")).scalar() == 1  # NORMAL
