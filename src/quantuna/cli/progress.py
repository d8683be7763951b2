"""What ``quantuna run`` shows while it works: the phase lines and the trial bar (stderr).

- Before the trials (building the model, checking the inputs, the fp32 baseline, the sensitivity
  ranking) each phase the library announces on the ``quantuna.phase`` logger
  (:mod:`quantuna.phases`) is one line, ``quantuna: measuring the fp32 baseline ...``, once it
  has lasted a second, and one more with its seconds when it ends (fast phases and a spec
  error's one line stay quiet).
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
from typing import Any

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

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.higher: list[bool] = []
        self.pending: dict[str, threading.Timer] = {}
        self.here: dict[str, Any] | None = None  # this host's facts, read once

    def ready(self, study: Any, remaining: int) -> None:
        """Open the bar once the study knows how many trials are left (or say none are)."""
        if not self.enabled:
            return
        if not remaining:
            from quantuna.study.budget import count_spent

            spent = count_spent(study)
            print(f"quantuna: budget reached: the study has spent {spent} trials; "
                  f"run with --trials N (N > {spent}) for more", file=sys.stderr)
            return
        from tqdm.auto import tqdm

        directions = study.user_attrs.get(attrs.SETUP, {}).get("higher_is_better")
        names = study.user_attrs.get(attrs.SETUP, {}).get("objectives", [])
        self.higher = directions or [n == "accuracy" for n in names]
        self.bar = tqdm(total=remaining, unit="trial", file=sys.stderr, desc=self.DESC,
                        bar_format=BAR_FORMAT)

    def phase(self, name: str, event: str, seconds: float | None) -> None:
        """Show a phase of the library: the bar's description, or a line before the bar."""
        if not self.enabled:
            return
        if event == "say":
            if self.bar is not None:
                self.bar.write(f"quantuna: {name}", file=sys.stderr)
            else:
                self._say(f"quantuna: {name}")
        elif self.bar is not None:
            self.bar.set_description(name if event == "start" else self.DESC, refresh=True)
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
                    self._say(f"quantuna: {name}: {seconds:.1f} s")

    @staticmethod
    def _say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    def lock_wait(self, holder: str | None) -> None:
        """Say on the bar that the trial waits for the latency lock, and who holds it."""
        if self.bar is None:
            if holder is not None and self.enabled:
                print(f"waiting for the latency lock held by {holder}", file=sys.stderr)
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
        """Close the bar (a no-op when none was opened)."""
        if self.bar is not None:
            self.bar.close()


class PhaseLines(logging.Handler):
    """Renders the ``quantuna.phase`` records through a :class:`Progress`."""

    def __init__(self, progress: Progress) -> None:
        super().__init__(logging.INFO)
        self.progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        name = getattr(record, "phase", None)
        if name is not None:
            self.progress.phase(str(name), str(getattr(record, "event", "")),
                                getattr(record, "seconds", None))

    def __enter__(self) -> PhaseLines:
        from quantuna.phases import LOGGER

        logger = logging.getLogger(LOGGER)
        self.saved = (logger.level, logger.propagate)
        if not self.progress.enabled:  # --no-progress, workers: phases stay plain log records (-v)
            return self
        logger.setLevel(logging.INFO)
        if logging.getLogger().getEffectiveLevel() > logging.INFO:  # -v keeps the log lines too
            logger.propagate = False  # shown here, not again as an INFO log line
        logger.addHandler(self)
        return self

    def __exit__(self, *exc: object) -> None:
        from quantuna.phases import LOGGER

        logger = logging.getLogger(LOGGER)
        logger.removeHandler(self)  # (a no-op when it was never added)
        logger.setLevel(self.saved[0])
        logger.propagate = self.saved[1]
