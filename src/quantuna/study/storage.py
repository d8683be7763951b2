"""Optuna storages from URLs, with heartbeats.

- ``sqlite:///``, ``postgresql+psycopg2://`` and other SQLAlchemy URLs give Optuna's
  ``RDBStorage`` with heartbeats: a dead worker's trial is marked failed and retried by the others
  (``RetryHeartbeatStaleTrialCallback``); completed trials are never lost.
- ``redis://`` gives Optuna's ``JournalStorage`` on Redis. Optuna 5.0's journal has no heartbeat
  (optuna/optuna#6615), so :class:`quantuna._compat.HeartbeatJournalStorage` adds the one Optuna's own
  ``fail_stale_trials`` and retry callback need: a trial system attr stamped with the Redis
  server's clock (no skew between machines).
- Mutual exclusion over a study's attrs lives in :mod:`quantuna.study.mutex`.
"""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import optuna

from quantuna._compat import HeartbeatJournalStorage, experimental_quiet
from quantuna._secrets import redact_text, redact_url
from quantuna.errors import SpecError

HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30
MAX_RETRY = 2
CREATE_ATTEMPTS = 6


def heartbeat_settings() -> tuple[int, int]:
    """Heartbeat interval and grace period in seconds (``QUANTUNA_HEARTBEAT_INTERVAL`` and
    ``QUANTUNA_HEARTBEAT_GRACE`` override the defaults, 10 and 30)."""
    values = []
    for name, default in (("INTERVAL", HEARTBEAT_INTERVAL), ("GRACE", GRACE_PERIOD)):
        raw = os.environ.get(f"QUANTUNA_HEARTBEAT_{name}", str(default))
        try:
            value = int(raw)
        except ValueError:
            value = 0
        if value < 1:
            raise SpecError(f"QUANTUNA_HEARTBEAT_{name}={raw!r}: give a whole number of seconds >= 1")
        values.append(value)
    interval, grace = values
    if grace <= interval:
        raise SpecError(
            f"QUANTUNA_HEARTBEAT_GRACE={grace} must exceed QUANTUNA_HEARTBEAT_INTERVAL={interval}"
        )
    return interval, grace


def sqlite_file(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (``None`` for other storages and in-memory SQLite)."""
    if not url.startswith("sqlite:///") or url.removeprefix("sqlite:///") in ("", ":memory:"):
        return None
    return Path(url.removeprefix("sqlite:///").split("?", 1)[0])


def _new_sqlite_file(url: str) -> bool:
    """True when ``url`` is a SQLite file that does not exist yet, or is empty."""
    path = sqlite_file(url)
    try:
        return path is not None and path.stat().st_size == 0
    except FileNotFoundError:
        return True


def require_existing(url: str, *, where: str) -> None:
    """Refuse to open a SQLite storage that does not exist (opening would create an empty file)."""
    path = sqlite_file(url)
    if path is not None and not path.is_file():
        raise SpecError(f"{where}: no study storage at {path}; run `quantuna run` first")


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage an URL names.

    ``sqlite:///``, ``postgresql+psycopg2://`` and other SQLAlchemy URLs give an ``RDBStorage``
    with heartbeats; ``redis://host:port/db`` gives a :class:`HeartbeatJournalStorage` on Redis
    (``?prefix=NAME`` keeps its logs under their own keys).

    Raises:
        SpecError: the URL cannot be opened (the message never shows a password).
    """
    interval, grace = heartbeat_settings()
    try:
        with experimental_quiet():
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            if url.startswith(("redis://", "rediss://")):
                return _redis_storage(url, interval, grace, retry)
            import sqlalchemy.exc

            if url.startswith("sqlite"):  # local workers wait for the file lock, not fail
                engine: dict[str, Any] = {"connect_args": {"timeout": 60}}
                if url.startswith(("sqlite:", "sqlite+pysqlite:")):  # sqlite3's own driver
                    engine["connect_args"]["factory"] = JournalAheadConnection
            else:
                engine = {"pool_pre_ping": True}
            new = _new_sqlite_file(url)
            for attempt in range(CREATE_ATTEMPTS):
                try:
                    return optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine,
                        # the tables Optuna creates in a new file are its current schema: checking
                        # them against its migration scripts (loading all 30) would find nothing
                        skip_compatibility_check=new,
                        heartbeat_interval=interval,
                        grace_period=grace,
                        heartbeat_stale_trial_callback=retry,
                    )
                except sqlalchemy.exc.DBAPIError as exc:
                    # workers starting together on an empty database race to create Optuna's
                    # tables (SQLite: "table studies already exists", an OperationalError;
                    # PostgreSQL: an IntegrityError); the loser finds them made on a later attempt
                    if attempt == CREATE_ATTEMPTS - 1 or not _creation_race(exc):
                        raise
                    time.sleep(0.2 + 0.3 * attempt)
            raise AssertionError("unreachable")
    except SpecError:
        raise
    except ImportError as exc:
        raise SpecError(
            f"storage {redact_url(url)}: a driver is missing ({redact_text(str(exc))}); "
            "pip install 'quantuna[postgres]' or 'quantuna[redis]'"
        ) from None
    except Exception as exc:
        reason = redact_text(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise SpecError(f"storage {redact_url(url)}: cannot open it ({reason})") from None


class JournalAheadConnection(sqlite3.Connection):
    """The connection of quantuna's SQLite storages: write-ahead log and ``synchronous=NORMAL``
    from its first statement on (given to ``sqlite3.connect`` as its ``factory``, so every
    connection of the engine has them, the one that creates Optuna's tables in a new file too).

    A commit then no longer waits for the disk (about 8 ms each here, ~40 per trial: most of a
    digits trial's cost), and neither do the ~30 statements that create the tables (each its own
    transaction: 0.1-0.3 s). A killed worker loses nothing committed; only an OS crash or power
    cut may lose the last commits, never the file's consistency. Local workers share the file as
    before (WAL needs a local file system: several machines share a study through PostgreSQL or
    Redis).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execute("PRAGMA journal_mode=WAL").close()
        self.execute("PRAGMA synchronous=NORMAL").close()


def _creation_race(exc: Exception) -> bool:
    """True for the errors two processes creating Optuna's tables at once can get."""
    import sqlalchemy.exc

    if isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, sqlalchemy.exc.OperationalError) and (
        "already exists" in text or "database is locked" in text
    )


def _redis_storage(url: str, interval: int, grace: int, retry: Any) -> HeartbeatJournalStorage:
    try:
        import redis
    except ImportError:
        raise SpecError(
            f"storage {redact_url(url)}: the redis package is missing; pip install 'quantuna[redis]'"
        ) from None
    from optuna.storages.journal import JournalRedisBackend

    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = "".join(v for k, v in query if k == "prefix")
    plain = urlunsplit(parts._replace(query=urlencode([(k, v) for k, v in query if k != "prefix"])))
    client = redis.Redis.from_url(plain)
    client.ping()  # fail here, with the reason, rather than at the first trial
    return HeartbeatJournalStorage(
        JournalRedisBackend(plain, prefix=prefix),
        clock=client,
        heartbeat_interval=interval,
        grace_period=grace,
        stale_trial_callback=retry,
    )
