"""Optuna storages from URLs: SQLite or PostgreSQL (RDB, with heartbeats) and Redis journals.

Heartbeats let a dead worker's trial be marked failed and retried by the others (Optuna's
``RetryHeartbeatStaleTrialCallback``); completed trials are never lost.
"""

from __future__ import annotations

import warnings
from typing import Any

import optuna

from quantuna.errors import SpecError
from quantuna.spec import redact_url

HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30
MAX_RETRY = 2


def make_storage(url: str) -> optuna.storages.BaseStorage:
    """The Optuna storage an URL names.

    ``sqlite:///``, ``postgresql+psycopg2://`` and other SQLAlchemy URLs give an ``RDBStorage``
    with heartbeats; ``redis://`` gives a ``JournalStorage`` on Redis.

    Raises:
        SpecError: the URL cannot be opened (the message never shows a password).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if url.startswith(("redis://", "rediss://")):
                return _redis_storage(url)
            return optuna.storages.RDBStorage(
                url,
                heartbeat_interval=HEARTBEAT_INTERVAL,
                grace_period=GRACE_PERIOD,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=MAX_RETRY
                ),
            )
    except SpecError:
        raise
    except ImportError as exc:
        raise SpecError(
            f"storage {redact_url(url)}: a driver is missing ({exc}); "
            "pip install 'quantuna[postgres]' or 'quantuna[redis]'"
        ) from None
    except Exception as exc:
        reason = redact_url(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise SpecError(f"storage {redact_url(url)}: cannot open it ({reason})") from None


def _redis_storage(url: str) -> Any:
    try:
        import redis  # noqa: F401
    except ImportError:
        raise SpecError(
            f"storage {redact_url(url)}: the redis package is missing; pip install 'quantuna[redis]'"
        ) from None
    from optuna.storages.journal import JournalRedisBackend

    return optuna.storages.JournalStorage(JournalRedisBackend(url))
