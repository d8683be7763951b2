"""The progress bar: the latency lock's holder, the phases, one best feasible trial, the budget."""

from __future__ import annotations

import io
import re
import sys
import time

import pytest

from quantuna.cli import progress as progress_module
from quantuna.cli import spinner as spinner_module
from quantuna.cli.progress import PhaseLines
from quantuna.cli.run import Progress
from quantuna.phases import phase


class FakeBar:
    def __init__(self) -> None:
        self.desc = Progress.DESC

    def set_description(self, desc: str, refresh: bool = True) -> None:
        self.desc = desc


def test_the_bar_names_the_lock_holder_while_a_trial_waits() -> None:
    progress = Progress(enabled=True)
    progress.bar = FakeBar()
    progress.lock_wait("pid 4242, study digits-int8")
    assert progress.bar.desc == "waiting for the latency lock (pid 4242, study digits-int8)"
    progress.lock_wait(None)
    assert progress.bar.desc == Progress.DESC


def test_without_a_bar_the_wait_is_one_line_on_stderr(capsys) -> None:
    Progress(enabled=True).lock_wait("pid 1, study s")
    assert capsys.readouterr().err == "waiting for the latency lock held by pid 1, study s\n"
    Progress(enabled=False).lock_wait("pid 1, study s")
    assert capsys.readouterr().err == ""


class FakeTrial:
    def __init__(self, number: int, values: dict[str, float], feasible: bool) -> None:
        self.number = number
        self.user_attrs = {"values": values, "feasible": feasible}


class FakeStudy:
    metric_names = ["accuracy (top1)", "performance [ms]", "modelsize [MiB]"]
    user_attrs = {"quantuna": {"objectives": ["accuracy", "performance", "modelsize"],
                               "higher_is_better": [True, False, False]}}

    def __init__(self, trials: list[FakeTrial]) -> None:
        self.trials = trials

    def get_trials(self, deepcopy: bool = False) -> list[FakeTrial]:
        return self.trials


def test_best_feasible_values_come_from_one_trial_with_units() -> None:
    study = FakeStudy([
        FakeTrial(0, {"accuracy": 0.99, "performance": 0.05, "modelsize": 0.10}, True),
        FakeTrial(1, {"accuracy": 0.98, "performance": 0.03, "modelsize": 0.50}, True),
        FakeTrial(2, {"accuracy": 0.50, "performance": 0.01, "modelsize": 0.01}, False),
    ])
    progress = Progress(enabled=True)
    text = progress.best_text(study)
    assert text == "best #1: 0.98 top1, 0.03 ms, 0.5 MiB"  # trial 1's own figures, not a mix
    assert progress.best_text(FakeStudy([])) == "no feasible trial yet"


def test_phases_are_lines_before_the_bar_and_its_description_during(capsys) -> None:
    import logging
    import time

    from quantuna.cli.progress import PhaseLines
    from quantuna.phases import phase

    progress = Progress(enabled=True)
    with PhaseLines(progress):
        with phase("checking the spec"):
            pass  # fast: nothing shown
        with phase("measuring the fp32 baseline"):
            time.sleep(1.3)
        assert capsys.readouterr().err == ("quantuna: measuring the fp32 baseline ...\n"
                                           "quantuna: measuring the fp32 baseline: 1.3 s\n")
        progress.bar = FakeBar()
        with phase("calibrating Entropy/200"):
            assert progress.bar.desc == "calibrating Entropy/200"
        assert progress.bar.desc == Progress.DESC
    assert not logging.getLogger("quantuna.phase").handlers


def test_a_spent_budget_says_so(capsys) -> None:
    import optuna

    study = optuna.create_study()
    Progress(enabled=True).ready(study, 0)
    assert "budget reached: the study has spent 0 trials" in capsys.readouterr().err


class FakeTTY(io.StringIO):
    """A terminal as the status line sees one."""

    def isatty(self) -> bool:
        return True


def _wait_for(condition, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the status line never drew"
        time.sleep(0.01)


def _fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_module, "SLOW", 0.0)
    monkeypatch.setattr(spinner_module, "INTERVAL", 0.01)


def test_on_a_terminal_a_spinner_names_the_running_phase_and_stops_with_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _fast(monkeypatch)
    stream = FakeTTY()
    progress = Progress(enabled=True, stream=stream)
    assert progress.status is not None
    with PhaseLines(progress):
        with phase("checking the spec, the model and the data"):
            with phase("building big.onnx with build.py:make (once)"):
                _wait_for(lambda: stream.getvalue().count("\rquantuna: building big.onnx") >= 3)
            progress._say("quantuna: a fact")  # a line while a frame is up: the frame is wiped first
            mark = len(stream.getvalue())
            _wait_for(lambda: "\rquantuna: checking the spec" in stream.getvalue()[mark:])
        done = stream.getvalue()
        time.sleep(0.1)
        assert stream.getvalue() == done  # nothing after the phase ended
        assert progress.status.thread is None
    assert re.search(r"\rquantuna: building big\.onnx with build\.py:make \(once\) [|/\\-] \d+ s", done)
    lines = [line.strip() for line in done.replace("\r", "\n").splitlines() if line.strip()]
    assert "quantuna: a fact" in lines
    assert lines[-1].startswith("quantuna: checking the spec, the model and the data: ")
    assert done.endswith("s\n")  # the end line, on a wiped line, is the last thing written


def test_a_phase_stopped_by_ctrl_c_leaves_no_frame_and_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    _fast(monkeypatch)
    stream = FakeTTY()
    progress = Progress(enabled=True, stream=stream)
    with pytest.raises(KeyboardInterrupt), PhaseLines(progress):
        with phase("measuring the fp32 baseline"):
            _wait_for(lambda: "\rquantuna: measuring" in stream.getvalue())
            raise KeyboardInterrupt
    done = stream.getvalue()
    time.sleep(0.1)
    assert stream.getvalue() == done and progress.status.thread is None
    assert done.endswith(" s\n")  # the last thing written: the end line, on a wiped line
    assert done.split("\r")[-1].startswith("quantuna: measuring the fp32 baseline: stopped after ")
    assert sys.stderr is not None and not isinstance(sys.stderr, spinner_module.ClearingStream)


def test_off_a_terminal_or_without_progress_no_spinner_is_drawn(monkeypatch: pytest.MonkeyPatch) -> None:
    _fast(monkeypatch)
    plain = io.StringIO()  # not a TTY: the phase lines of before, no frames
    progress = Progress(enabled=True, stream=plain)
    assert progress.status is None
    with PhaseLines(progress), phase("measuring the fp32 baseline"):
        _wait_for(lambda: "..." in plain.getvalue())
    assert "\r" not in plain.getvalue()
    assert plain.getvalue().startswith("quantuna: measuring the fp32 baseline ...\n")
    tty = FakeTTY()
    off = Progress(enabled=False, stream=tty)  # --no-progress and workers
    with PhaseLines(off), phase("measuring the fp32 baseline"):
        time.sleep(0.05)
    assert off.status is None and tty.getvalue() == ""


def test_log_records_go_above_the_open_bar_and_the_handlers_get_their_streams_back() -> None:
    """``-v``: a log record while the bar is open is a line of its own above the bar (never
    glued to the bar's line), and closing the bar gives the handler its own stream back."""
    import logging

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        progress = Progress(enabled=True, stream=stream)
        progress.ready(FakeStudy([]), 3)
        logging.getLogger("quantuna.test").warning("a record while the bar is open")
        progress.close()
        assert handler.stream is stream
    finally:
        root.removeHandler(handler)
    lines = re.split(r"[\r\n]", stream.getvalue())
    assert "a record while the bar is open" in lines  # the whole line, nothing of the bar on it


def test_with_verbose_logging_a_slow_phase_is_its_log_lines_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """``-v`` (the root logger at INFO): the phase's INFO records are what the user sees; no
    second ``quantuna: ... ...`` line for the same phase (the --jobs parent printed both)."""
    import logging

    monkeypatch.setattr(progress_module, "SLOW", 0.05)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        progress = Progress(enabled=True, stream=stream)
        with PhaseLines(progress), phase("measuring the fp32 baseline"):
            time.sleep(0.3)
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
    assert stream.getvalue().count("measuring the fp32 baseline ...") == 1, stream.getvalue()
