"""Optuna storages from URLs, with heartbeats, and mutual exclusion over a study's attrs.

- ``sqlite:///``, ``postgresql+psycopg2://`` and other SQLAlchemy URLs give Optuna's
  ``RDBStorage`` with heartbeats: a dead worker's trial is marked failed and retried by the others
  (``RetryHeartbeatStaleTrialCallback``); completed trials are never lost.
- ``redis://`` gives Optuna's ``JournalStorage`` on Redis. Optuna 5.0's journal has no heartbeat
  (optuna/optuna#6615), so :class:`HeartbeatJournalStorage` adds the one Optuna's own
  ``fail_stale_trials`` and retry callback need: a trial system attr stamped with the Redis
  server's clock (no skew between machines).
- :func:`enter_bakery` is Lamport's bakery algorithm over Optuna attrs: mutual exclusion across
  processes and machines with only the reads and writes every storage offers.
  :class:`StudyMutex` uses study system attrs (one worker measures the baseline, one worker at a
  time starts a trial); :func:`claim_measurement` uses trial system attrs (one trial measures a
  config, the others reuse it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import optuna
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.trial import FrozenTrial, TrialState

from quantuna.errors import SpecError
from quantuna.spec import redact_url

HEARTBEAT_INTERVAL = 10
GRACE_PERIOD = 30
MAX_RETRY = 2
POLL_SECONDS = 0.2
HEARTBEAT_ATTR = "quantuna:heartbeat"
CLAIM_ATTR = "quantuna:claim"
MUTEX_PREFIX = "quantuna:mutex:"


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
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)
            if url.startswith(("redis://", "rediss://")):
                return _redis_storage(url, interval, grace, retry)
            import sqlalchemy.exc

            if url.startswith("sqlite"):  # local workers wait for the file lock, not fail
                engine: dict[str, Any] = {"connect_args": {"timeout": 60}}
            else:
                engine = {"pool_pre_ping": True}
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine,
                        heartbeat_interval=interval,
                        grace_period=grace,
                        heartbeat_stale_trial_callback=retry,
                    )
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                    # workers starting together on an empty database race to create Optuna's
                    # tables; the loser finds them made on its next attempt
                    if attempt == 2:
                        raise
                    time.sleep(0.5 + attempt)
            raise AssertionError("unreachable")
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


class HeartbeatJournalStorage(optuna.storages.JournalStorage, BaseHeartbeat):
    """Optuna's ``JournalStorage`` with the heartbeat ``RDBStorage`` has.

    Optuna's optimize loop records a heartbeat for the running trial every ``heartbeat_interval``
    seconds and, before each trial, fails the running trials whose heartbeat is older than
    ``grace_period`` and hands them to ``stale_trial_callback`` (a retry). The heartbeat is the
    trial system attr ``quantuna:heartbeat`` = ``[trial_id, redis server time]``; a trial that
    never beat is never stale (as in ``RDBStorage``).
    """

    def __init__(
        self,
        backend: Any,
        *,
        clock: Any,
        heartbeat_interval: int,
        grace_period: int,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None,
    ) -> None:
        super().__init__(backend)
        self._clock = clock
        self._heartbeat_interval = heartbeat_interval
        self._grace_period = grace_period
        self._stale_trial_callback = stale_trial_callback

    def _now(self) -> float:
        seconds, micros = self._clock.time()
        return float(seconds) + micros / 1e6

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, [trial_id, self._now()])
        except (optuna.exceptions.UpdateFinishedTrialError, KeyError):
            pass  # another worker already failed it as stale

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = self._now()
        stale = []
        for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.system_attrs.get(HEARTBEAT_ATTR)
            # a retried trial inherits its predecessor's attrs: only its own beat counts
            if beat and beat[0] == t._trial_id and now - beat[1] > self._grace_period:
                stale.append(t._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int | None:
        return self._heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_trial_callback


# ---------------------------------------------------------------------------------------------
# Mutual exclusion over Optuna attrs


Registers = dict[Any, dict[str, Any]]


def enter_bakery(
    me: Any,
    read: Callable[[], Registers],
    write: Callable[[dict[str, Any]], None],
    *,
    give_up: Callable[[], bool] = lambda: False,
    on_wait: Callable[[], None] = lambda: None,
) -> bool:
    """Lamport's bakery: return True once ``me`` holds the lock, False if ``give_up()`` said so.

    ``read()`` returns the registers of the *other live* contenders, each ``{"choosing": bool,
    "ticket": int}`` (ticket 0: not contending), from one consistent read of the storage;
    ``write(register)`` stores ours. Holders release by writing ticket 0 or by going away (what
    "live" means is the caller's: a RUNNING trial, a register that keeps beating).
    """
    write({"choosing": True, "ticket": 0})
    ticket = 1 + max((int(r.get("ticket") or 0) for r in read().values()), default=0)
    write({"choosing": False, "ticket": ticket})
    while True:
        others = read()
        ahead = [
            k for k, r in others.items()
            if r.get("choosing") or (0 < int(r.get("ticket") or 0) and (r["ticket"], k) < (ticket, me))
        ]
        if not ahead:
            return True
        if give_up():
            write({"choosing": False, "ticket": 0})
            return False
        on_wait()
        time.sleep(POLL_SECONDS)


def _study_system_attrs(study: optuna.Study) -> dict[str, Any]:
    return study._storage.get_study_system_attrs(study._study_id)


class StudyMutex:
    """A lock named ``name`` on a study, held by one process of any machine at a time.

    Each contender keeps a register in the study's system attrs and, while contending or holding,
    rewrites it every heartbeat interval; a register that has not changed for a grace period is
    taken as a dead worker's and cleared. Use it as a context manager or with
    :meth:`acquire`/:meth:`release`.
    """

    def __init__(self, study: optuna.Study, name: str) -> None:
        self.study = study
        self.prefix = f"{MUTEX_PREFIX}{name}:"
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.interval, self.grace = heartbeat_settings()
        self._register: dict[str, Any] = {"choosing": False, "ticket": 0}
        self._beats = 0
        self._seen: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self, register: dict[str, Any]) -> None:
        with self._lock:
            self._register = dict(register)
            self._store()

    def _store(self) -> None:
        self._beats += 1
        value = {**self._register, "beat": self._beats}
        self.study._storage.set_study_system_attr(self.study._study_id, self.prefix + self.owner, value)

    def _read(self) -> Registers:
        now = time.monotonic()
        live: Registers = {}
        for key, value in _study_system_attrs(self.study).items():
            if not key.startswith(self.prefix) or key == self.prefix + self.owner:
                continue
            if not value.get("choosing") and not value.get("ticket"):
                self._seen.pop(key, None)
                continue
            text = json.dumps(value, sort_keys=True)
            seen = self._seen.get(key)
            if seen is None or seen[0] != text:
                self._seen[key] = (text, now)
            elif now - seen[1] > self.grace:  # its owner stopped beating: gone
                self.study._storage.set_study_system_attr(
                    self.study._study_id, key, {"choosing": False, "ticket": 0, "stale": True}
                )
                continue
            live[key[len(self.prefix):]] = value
        return live

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:  # checked and written at once: a release cannot slip in between
                if not self._register.get("choosing") and not self._register.get("ticket"):
                    return
                self._store()

    def acquire(self, *, give_up: Callable[[], bool] = lambda: False) -> bool:
        """Wait for the lock; False (not held) as soon as ``give_up()`` returns True."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name="quantuna-mutex-beat", daemon=True)
        self._thread.start()
        try:
            held = enter_bakery(self.owner, self._read, self._write, give_up=give_up)
        except BaseException:  # Ctrl-C while waiting: leave the queue at once
            self.release()
            raise
        if not held:
            self._stop_beating()
        return held

    def release(self) -> None:
        """Give the lock up (a no-op when it is not held)."""
        self._stop_beating()
        if self._register.get("choosing") or self._register.get("ticket"):
            self._write({"choosing": False, "ticket": 0})

    def _stop_beating(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def __enter__(self) -> StudyMutex:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_measurement(
    study: optuna.Study,
    trial: optuna.Trial,
    key: str,
    find: Callable[[optuna.Study, str, int], FrozenTrial | None],
) -> FrozenTrial | None:
    """A finished trial of config ``key`` to reuse, or None: this trial measures it.

    Two workers that draw the same config at once never both measure it: trials queue for the
    config in a bakery over their system attrs; the first measures, the others wait for its
    result (a trial that dies stops being RUNNING, its heartbeat fails it, the next one measures).
    ``find(study, key, number)`` is the study's rule for a reusable finished trial.
    """
    previous = find(study, key, trial.number)
    if previous is not None:
        return previous
    me = trial.number
    found: list[FrozenTrial] = []
    last_sweep = [time.monotonic()]

    def write(register: dict[str, Any]) -> None:
        value = {**register, "key": key, "trial": me}
        trial.storage.set_trial_system_attr(trial._trial_id, CLAIM_ATTR, value)

    def read() -> Registers:
        registers: Registers = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            claim = t.system_attrs.get(CLAIM_ATTR)
            # retried trials inherit their predecessor's attrs: only a trial's own claim counts
            if t.number != me and claim and claim.get("trial") == t.number and claim.get("key") == key:
                registers[t.number] = claim
        return registers

    def give_up() -> bool:
        hit = find(study, key, me)
        if hit is not None:
            found.append(hit)
        return hit is not None

    def sweep() -> None:  # the trial ahead may be a dead worker's: let heartbeats fail it
        if time.monotonic() - last_sweep[0] > 1.0:
            last_sweep[0] = time.monotonic()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)

    if not enter_bakery(me, read, write, give_up=give_up, on_wait=sweep):
        return found[0]
    # no trial ahead is RUNNING: one that measured this config is finished and visible now
    return find(study, key, me)
