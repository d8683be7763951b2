"""Mutual exclusion across processes and machines over Optuna attrs.

:func:`enter_bakery` is Lamport's bakery algorithm with only the reads and writes every storage
offers. :class:`StudyMutex` uses study system attrs (one worker measures the baseline, one worker
at a time starts a trial); :func:`claim_measurement` uses trial system attrs (one trial measures a
config, the others reuse it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from quantuna._compat import (
    experimental_quiet,
    set_attrs_now,
    share_trial_read,
    study_id,
    study_storage,
    study_view,
    trial_id,
)
from quantuna.study.storage import heartbeat_settings

POLL_SECONDS = 0.2
CLAIM_ATTR = "quantuna:claim"
MUTEX_PREFIX = "quantuna:mutex:"

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
    ``write(register)`` stores ours. Holders release by writing ticket 0, not choosing, or by
    going away (what "live" means is the caller's: a RUNNING trial, a register that keeps
    beating).

    A contender still choosing counts as holding ticket 1 when the others draw theirs (a larger
    ticket is always safe: it only queues later), and as ahead of them while it chooses. So when
    the read after our ``choosing`` write shows no other contender at all, we hold the lock at
    once and keep ``choosing`` until we release: any contender that came after read it, drew a
    ticket above 1 and waits (one read and one write fewer in the common case: nobody else
    wants the lock).
    """
    write({"choosing": True, "ticket": 0})
    first = read()
    if not first:
        return True
    ticket = 1 + max((max(int(r.get("ticket") or 0), 1 if r.get("choosing") else 0)
                      for r in first.values()), default=0)
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
    return study_storage(study).get_study_system_attrs(study_id(study))


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
        study_storage(self.study).set_study_system_attr(
            study_id(self.study), self.prefix + self.owner, value
        )

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
                study_storage(self.study).set_study_system_attr(
                    study_id(self.study), key, {"choosing": False, "ticket": 0, "stale": True}
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
    *,
    announce: dict[str, Any] | None = None,
) -> FrozenTrial | None:
    """A finished trial of config ``key`` to reuse, or None: this trial measures it.

    Two workers that draw the same config at once never both measure it: trials queue for the
    config in a bakery over their system attrs; the first measures, the others wait for its
    result (a trial that dies stops being RUNNING, its heartbeat fails it, the next one measures).
    ``find(study, key, number)`` is the study's rule for a reusable finished trial. ``announce``
    (user attrs other workers read, such as the config key) goes in the first register's
    transaction, with the trial's pending params: one commit fewer per trial.
    """
    me = trial.number  # no find before the queue: the one after it answers (a read fewer)
    found: list[FrozenTrial] = []
    last_sweep = [time.monotonic()]
    seen: list[optuna.Study] = []  # the study as the last read saw it: find looks there
    pending = [announce]

    def write(register: dict[str, Any]) -> None:
        value = {**register, "key": key, "trial": me}
        if pending[0] is not None:
            set_attrs_now(trial, pending[0], {CLAIM_ATTR: value})
            pending[0] = None
            return
        study_storage(study).set_trial_system_attr(trial_id(trial), CLAIM_ATTR, value)

    def read() -> Registers:
        registers: Registers = {}
        trials = study.get_trials(deepcopy=False)
        seen[:] = [study_view(study, trials)]
        share_trial_read(study, trials)  # the trial's later lookups read this, not the storage
        for t in (t for t in trials if t.state == TrialState.RUNNING):
            claim = t.system_attrs.get(CLAIM_ATTR)
            # retried trials inherit their predecessor's attrs: only a trial's own claim counts
            if t.number != me and claim and claim.get("trial") == t.number and claim.get("key") == key:
                registers[t.number] = claim
        return registers

    def give_up() -> bool:
        hit = find(seen[0], key, me)
        if hit is not None:
            found.append(hit)
        return hit is not None

    def sweep() -> None:  # the trial ahead may be a dead worker's: let heartbeats fail it
        if time.monotonic() - last_sweep[0] > 1.0:
            last_sweep[0] = time.monotonic()
            with experimental_quiet():
                optuna.storages.fail_stale_trials(study)

    if not enter_bakery(me, read, write, give_up=give_up, on_wait=sweep):
        return found[0]
    # no trial ahead was RUNNING in the last read: one that measured this config was finished
    # in that same read, with its attrs (a trial writes them before Optuna tells its state)
    return find(seen[0], key, me)
