"""The progress bar says when a trial waits for the latency lock and who holds it."""

from __future__ import annotations

from quantuna.cli.run import Progress


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
