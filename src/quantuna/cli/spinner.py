"""A live status line for the phases before the trial bar: ``quantuna: measuring ... | 12 s``.

Only on a terminal (stderr a TTY) with progress on; elsewhere the phases stay the plain lines of
:mod:`quantuna.cli.progress`. One daemon thread redraws the line every :data:`INTERVAL` seconds
while a phase runs (it sleeps on an ``Event`` between frames, and exits when no phase is left):
the innermost running phase, its spinner frame and its seconds so far, cut to the terminal's
width so it never wraps. Every other write to stderr while it runs (a phase's end line, a log
record, a warning) goes through :meth:`StatusLine.write`, which first wipes the frame, so lines
never land on top of it. Nothing is drawn for a phase shorter than ``delay``.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import Any, TextIO

FRAMES = "|/-\\"
INTERVAL = 0.2  # seconds between frames


class StatusLine:
    """One stderr line rewritten in place while phases run (stack: the innermost is shown)."""

    def __init__(self, stream: TextIO, *, delay: float = 1.0, interval: float | None = None) -> None:
        self.stream = stream
        self.delay = delay
        self.interval = INTERVAL if interval is None else interval
        self.lock = threading.RLock()
        self.stack: list[tuple[str, float]] = []
        self.shown = 0  # characters of the frame on screen (0: none)
        self.frame = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def push(self, name: str) -> None:
        """A phase started: show it (once it has lasted ``delay``) until :meth:`pop`."""
        with self.lock:
            self.stack.append((name, time.monotonic()))
            if self.thread is None:
                self.stop.clear()
                self.thread = threading.Thread(target=self._run, name="quantuna-status",
                                               daemon=True)
                self.thread.start()

    def pop(self, name: str) -> None:
        """A phase ended: wipe its frame (the enclosing phase, if any, is drawn next)."""
        with self.lock:
            for i in range(len(self.stack) - 1, -1, -1):
                if self.stack[i][0] == name:
                    del self.stack[i]
                    break
            self._clear()
            if not self.stack:
                self.stop.set()
        self._join_if_idle()

    def write(self, text: str) -> int:
        """Write ``text`` to the stream below a wiped frame (redrawn at the next tick)."""
        with self.lock:
            self._clear()
            written = self.stream.write(text)
            self.stream.flush()
            return written

    def close(self) -> None:
        """Stop drawing and wipe the line (idempotent; also after an exception or Ctrl-C)."""
        with self.lock:
            self.stack.clear()
            self.stop.set()
            self._clear()
        self._join_if_idle()

    def _join_if_idle(self) -> None:
        thread = self.thread
        if thread is not None and self.stop.is_set() and thread is not threading.current_thread():
            thread.join(timeout=1.0)
            with self.lock:
                if self.thread is thread and self.stop.is_set():
                    self.thread = None

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            with self.lock:
                if self.stop.is_set():
                    return
                self._draw()

    def _draw(self) -> None:
        if not self.stack:
            return
        name, start = self.stack[-1]
        seconds = time.monotonic() - start
        if seconds < self.delay:
            return
        self.frame = (self.frame + 1) % len(FRAMES)
        width = max(20, shutil.get_terminal_size().columns - 1)
        text = f"quantuna: {name} {FRAMES[self.frame]} {seconds:.0f} s"
        if len(text) > width:
            text = text[: width - 3] + "..."
        try:
            self.stream.write("\r" + text + " " * max(0, self.shown - len(text)))
            self.stream.flush()
        except (OSError, ValueError):  # the terminal went away: stop drawing
            self.stop.set()
            return
        self.shown = len(text)

    def _clear(self) -> None:
        if self.shown:
            try:
                self.stream.write("\r" + " " * self.shown + "\r")
                self.stream.flush()
            except (OSError, ValueError):
                pass
            self.shown = 0


class ClearingStream:
    """A stand-in for stderr while the status line runs: every write wipes the frame first."""

    def __init__(self, status: StatusLine) -> None:
        self.status = status

    def write(self, text: str) -> int:
        return self.status.write(text)

    def flush(self) -> None:
        self.status.stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the real stream's
        return getattr(self.status.stream, name)
