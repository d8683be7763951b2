"""What ``quantuna run`` shows while it works: the phase lines and the trial bar (stderr).

- Before the trials (building the model, checking the inputs, the fp32 baseline, the sensitivity
  ranking) each phase the library announces on the ``quantuna.phase`` logger
  (:mod:`quantuna.phases`) shows once it has lasted a second: on a terminal as a live status
  line with a spinner and its seconds (:mod:`quantuna.cli.spinner`), elsewhere as one line,
  ``quantuna: measuring the fp32 baseline ...``; either way one line with its seconds when it
  ends (fast phases and a spec error's one line stay quiet).
- During the trials a tqdm bar of fixed width (readable at 80 columns) counts them; its
  description names the running phase (``calibrating Entropy/200``, waiting for the latency
  lock) and its postfix the best feasible trial so far: one trial's values, with units (when
  several CPUs timed the study, the best of the trials timed on this host's CPU).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from typing import Any, TextIO

from quantuna.cli.spinner import ClearingStream, StatusLine
from quantuna.study import attrs
from quantuna.study.cpus import cpu_of, measured_on

BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar:10}| {n_fmt}/{total_fmt} [{elapsed}]{postfix}"
SLOW = 1.0  # seconds: a phase that took longer says so when it ends


def _units(study: Any, names: list[str]) -> dict[str, str]:
    """``{"performance": "ms", "accuracy": "top1"}`` from the study's metric names, when set."""
    labels = list(study.metric_names or [])
    if len(labels) != len(names):
        return {}
    found = {}
    for name, label in zip(names, labels):
        match = re.search(r"\[(.+)\]$|\((.+)\)$", label)
        found[name] = next((g for g in match.groups() if g), "") if match else ""
    return found


class Progress:
    """A tqdm bar over the remaining trials; the phases before it as lines."""

    DESC = "trials"

    def __init__(self, enabled: bool, stream: TextIO | None = None) -> None:
        self.enabled = enabled
        self.stream: TextIO = stream if stream is not None else sys.stderr
        self.bar: Any = None
        self.higher: list[bool] = []
        self.pending: dict[str, threading.Timer] = {}
        self.here: dict[str, Any] | None = None  # this host's facts, read once
        self.logged = False  # -v: the phases are INFO log lines already, never a second line
        self.status = StatusLine(self.stream, delay=SLOW) if enabled and _is_tty(self.stream) else None

    def ready(self, study: Any, remaining: int) -> None:
        """Open the bar once the study knows how many trials are left (or say none are)."""
        if not self.enabled:
            return
        if not remaining:
            from quantuna.study.budget import count_spent

            spent = count_spent(study)
            self._say(f"quantuna: budget reached: the study has spent {spent} trials; "
                      f"run with --trials N (N > {spent}) for more")
            return
        from tqdm.auto import tqdm

        if self.status is not None:  # the bar owns the line from here on
            self.status.close()

        directions = study.user_attrs.get(attrs.SETUP, {}).get("higher_is_better")
        names = study.user_attrs.get(attrs.SETUP, {}).get("objectives", [])
        self.higher = directions or [n == "accuracy" for n in names]
        self.bar = tqdm(total=remaining, unit="trial", file=self.stream, desc=self.DESC,
                        bar_format=BAR_FORMAT)
        self.routed = _route_logs_above(self.bar, self.stream)

    def phase(self, name: str, event: str, seconds: float | None, ok: bool = True) -> None:
        """Show a phase of the library: the bar's description, or the status line or a line
        before the bar."""
        if not self.enabled:
            return
        if event == "say":
            if self.bar is not None:
                self.bar.write(f"quantuna: {name}", file=self.stream)
            else:
                self._say(f"quantuna: {name}")
        elif self.bar is not None:
            self.bar.set_description(name if event == "start" else self.DESC, refresh=True)
        elif self.status is not None:
            if event == "start":
                self.status.push(name)
                return
            self.status.pop(name)
            if seconds is not None and seconds >= SLOW and not self.logged:
                self._say(f"quantuna: {name}: " + (f"{seconds:.1f} s" if ok else
                                                   f"stopped after {seconds:.1f} s"))
        elif self.logged:  # the log line said it
            return
        elif event == "start":  # a line only once it has lasted SLOW: fast phases, and an error
            timer = threading.Timer(SLOW, self._say, (f"quantuna: {name} ...",))  # right away, stay
            timer.daemon = True                                                  # one line
            self.pending[name] = timer
            timer.start()
        else:
            waiting = self.pending.pop(name, None)
            if waiting is not None:
                waiting.cancel()
                if seconds is not None and seconds >= SLOW:  # its start line was shown
                    self._say(f"quantuna: {name}: " + (f"{seconds:.1f} s" if ok else
                                                       f"stopped after {seconds:.1f} s"))

    def _say(self, line: str) -> None:
        if self.status is not None:
            self.status.write(line + "\n")
        else:
            print(line, file=self.stream, flush=True)

    def lock_wait(self, holder: str | None) -> None:
        """Say on the bar that the trial waits for the latency lock, and who holds it."""
        if self.bar is None:
            if holder is not None and self.enabled:
                self._say(f"waiting for the latency lock held by {holder}")
            return
        self.bar.set_description(self.DESC if holder is None else f"waiting for the latency lock "
                                 f"({holder})", refresh=True)

    def best_text(self, study: Any) -> str:
        """The best feasible trial so far (best on the first objective after accuracy), as
        ``best #10: 0.98 top1, 0.0335 ms, 0.151 MiB`` (3 significant digits: 80 columns); every figure is that one trial's."""
        names = study.user_attrs.get(attrs.SETUP, {}).get("objectives", [])
        feasible = [t for t in study.get_trials(deepcopy=False)
                    if t.user_attrs.get(attrs.FEASIBLE) and attrs.VALUES in t.user_attrs]
        feasible, where = self._on_this_cpu(study, feasible, names)
        if not feasible or not names:
            return f"no feasible trial{where} yet"
        order = [i for i, n in enumerate(names) if n != "accuracy"] + [
            i for i, n in enumerate(names) if n == "accuracy"]
        higher = self.higher or [n == "accuracy" for n in names]

        def key(t: Any) -> tuple[float, ...]:
            values = dict(t.user_attrs[attrs.VALUES])
            if where:  # fp32's ms is another CPU's: latency as the ratio to fp32 on this one
                values["performance"] = t.user_attrs.get(attrs.RELATIVE, {}).get("performance") or 1.0
            return tuple(-values[names[i]] if higher[i] else values[names[i]] for i in order)

        best = min(feasible, key=key)
        units = _units(study, names)
        values = best.user_attrs[attrs.VALUES]
        shown = ", ".join(f"{values[n]:.3g} {units.get(n, '')}".rstrip() for n in names)
        return f"best{where} #{best.number}: {shown}"

    def _on_this_cpu(self, study: Any, feasible: list[Any], names: list[str]) -> tuple[list[Any], str]:
        """Latencies compare only on one CPU: when several CPUs timed the study's trials, the
        feasible trials timed on this host's CPU (and the fp32 trial), said as " on this CPU"."""
        if "performance" not in names:
            return feasible, ""
        by_number = {t.number: t.user_attrs for t in study.get_trials(deepcopy=False)}
        threads = ((study.user_attrs.get(attrs.BASELINE) or {}).get(attrs.THREADS) or {}).get("latency")
        timed = {t.number: measured_on(a, by_number, threads) for t in study.get_trials(deepcopy=False)
                 if attrs.VALUES in (a := t.user_attrs)}
        if len(set(timed.values()) - {None}) < 2:
            return feasible, ""
        if self.here is None:
            self.here = attrs.host_facts()
        here = cpu_of({**self.here, attrs.THREADS: {"latency": threads}})
        return [t for t in feasible if timed.get(t.number) in (None, here)], " on this CPU"

    def __call__(self, study: Any, trial: Any) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        self.bar.set_postfix_str(self.best_text(study), refresh=False)

    def close(self) -> None:
        """Close the bar and stop the status line (no-ops when neither was opened)."""
        if self.status is not None:
            self.status.close()
        self.unroute()
        if self.bar is not None:
            self.bar.close()

    def unroute(self) -> None:
        """Give the log handlers back the streams they had before the bar opened (idempotent)."""
        for handler, stream in reversed(getattr(self, "routed", [])):
            handler.setStream(stream)
        self.routed = []


class _AboveBar:
    """A log handler's stream while the bar is open: each line goes above the bar (tqdm.write),
    so ``-v`` log records never land on top of it."""

    def __init__(self, bar: Any, real: Any) -> None:
        self.bar, self.real, self.pending = bar, real, ""

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            self.bar.write(line, file=self.real)
        return len(text)

    def flush(self) -> None:
        self.real.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the real stream's
        return getattr(self.real, name)


def _route_logs_above(bar: Any, stream: Any) -> list[tuple[logging.StreamHandler[Any], Any]]:
    """Point the handlers of the root logger and of optuna's (which does not propagate) that
    write where the bar draws at :class:`_AboveBar`; returns (handler, its stream) to put back
    when the bar closes."""
    routed = []
    for handler in logging.getLogger().handlers + logging.getLogger("optuna").handlers:
        if isinstance(handler, logging.StreamHandler) and handler.stream in (stream, sys.stderr):
            routed.append((handler, handler.setStream(_AboveBar(bar, stream))))
    return routed


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PhaseLines(logging.Handler):
    """Renders the ``quantuna.phase`` records through a :class:`Progress`."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "phase", None)
        if name is not None:
            self.progress.phase(str(name), str(getattr(record, "event", "")),
                                getattr(record, "seconds", None), bool(getattr(record, "ok", True)))

    def __enter__(self) -> PhaseLines:
        from quantuna.phases import LOGGER

        logger = logging.getLogger(LOGGER)
        self.saved = (logger.level, logger.propagate)
        if not self.progress.enabled:  # --no-progress, workers: phases stay plain log records (-v)
            return self
        logger.setLevel(logging.INFO)
        if logging.getLogger().getEffectiveLevel() > logging.INFO:  # -v keeps the log lines too
            logger.propagate = False  # shown here, not again as an INFO log line
        else:
            self.progress.logged = True  # shown as the INFO log line, not again here
        logger.addHandler(self)
        self._route_stderr()
        return self

    def _route_stderr(self) -> None:
        """While a status line may be drawn, every stderr write (log records, warnings, prints)
        goes through it, so it wipes the frame first and no line lands on top of it."""
        self.routed: list[tuple[logging.StreamHandler[Any], Any]] = []
        self.saved_stderr: Any = None
        status = self.progress.status
        if status is None:
            return
        clearing = ClearingStream(status)
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream in (
                    status.stream, sys.stderr, sys.__stderr__):
                self.routed.append((handler, handler.setStream(clearing)))
        if sys.stderr is status.stream:
            self.saved_stderr, sys.stderr = sys.stderr, clearing

    def __exit__(self, *exc: object) -> None:
        from quantuna.phases import LOGGER

        logger = logging.getLogger(LOGGER)
        self.progress.unroute()  # before the handlers get their own streams back
        logger.removeHandler(self)  # (a no-op when it was never added)
        logger.setLevel(self.saved[0])
        logger.propagate = self.saved[1]
        for handler, stream in getattr(self, "routed", []):
            handler.setStream(stream)
        if getattr(self, "saved_stderr", None) is not None:
            sys.stderr = self.saved_stderr
        if self.progress.status is not None:  # an exception or Ctrl-C: no frame left behind
            self.progress.status.close()
