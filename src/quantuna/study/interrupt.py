"""The SIGINT policy of a running study: Ctrl-C ends the running trial, nothing else."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import optuna


class Interrupt:
    """Ctrl-C that lands only inside the objective function.

    Optuna 5.0 breaks when a KeyboardInterrupt arrives while it records a trial (an
    UnboundLocalError in ``_run_trial``), so SIGINT raises only while a trial is being measured;
    elsewhere it asks the study to stop after the current step.
    """

    def __init__(self) -> None:
        self.requested = False
        self.inside = False

    def handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        if self.inside:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        """The handler in place for the ``with`` block (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self.handler)
        try:
            with quiet_unraisable_interrupts():
                yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def wrap(self, objective: Callable[[optuna.Trial], Any]) -> Callable[[optuna.Trial], Any]:
        """The objective, raising KeyboardInterrupt at its start once Ctrl-C was pressed."""

        def guarded(trial: optuna.Trial) -> Any:
            if self.requested:
                raise KeyboardInterrupt
            self.inside = True
            try:
                return objective(trial)
            finally:
                self.inside = False

        return guarded

    def callback(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        """An Optuna callback: stop the study after a trial once Ctrl-C was pressed."""
        if self.requested:
            study.stop()


@contextlib.contextmanager
def noticing_ctrl_c() -> Iterator[list[bool]]:
    """A list that becomes non-empty on SIGINT; the handler in place still runs."""
    seen: list[bool] = []
    if threading.current_thread() is not threading.main_thread():
        yield seen
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        seen.append(True)
        if callable(previous):
            previous(signum, frame)

    signal.signal(signal.SIGINT, handler)
    try:
        yield seen
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def quiet_unraisable_interrupts() -> Iterator[None]:
    """A KeyboardInterrupt raised inside a garbage-collector callback (SQLAlchemy has some)
    cannot propagate; Python would print it with a traceback ("Exception ignored in ...").
    Inside the block it is dropped quietly: whoever handles Ctrl-C has seen the signal (the
    study stops after the running trial; the ``--jobs`` parent stops its workers)."""
    hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        if isinstance(info.exc_value, KeyboardInterrupt):
            return
        hook(info)

    sys.unraisablehook = unraisable
    try:
        yield
    finally:
        sys.unraisablehook = hook
