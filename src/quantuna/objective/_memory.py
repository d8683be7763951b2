"""The peak resident memory of a region, by whatever the OS offers (Footprint's engine).

Each method names what measured a footprint (a trial's ``footprint_method`` attr):

============  ==========================================  =========================================
method        where                                       how exact
============  ==========================================  =========================================
``vmhwm``     Linux, ``/proc/self/clear_refs`` writable   exact: the kernel's peak counter is reset
                                                          at ``start()``, read (VmHWM) at ``end()``
``peak_wset`` Windows (psutil's ``peak_wset``)            exact when the region sets the process's
                                                          peak working set (in quantuna's fresh
                                                          child process it does); else ``sampled``
``ru_maxrss`` macOS, BSD, Linux without ``clear_refs``    the same with ``getrusage``'s ``ru_maxrss``
                                                          (bytes on macOS, KiB elsewhere)
``sampled``   anywhere RSS can be read (``/proc``,        a thread polls RSS every ~1 ms and keeps
              psutil); or when the peak counter did not   the maximum: a lower bound that misses a
              move                                        peak shorter than a poll
``none``      nothing to read (no psutil, no resource)    0.0, with a warning
============  ==========================================  =========================================

A process-wide peak counter cannot be reset off Linux, so ``peak_wset`` and ``ru_maxrss`` are
exact only when the region raises it: the footprint is then the new peak minus the RSS at
``start()``. When the counter did not move (an earlier peak was higher) the sampled maximum is
used, and the method says ``sampled``. Linux starts an exec'd process's ``ru_maxrss`` at its
parent's resident size, so there (without ``clear_refs``) the counter rarely moves in quantuna's
child. Every method is process-wide: other threads' allocations during the region count too.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable

try:
    import resource
except ImportError:  # pragma: no cover - Windows
    resource = None  # type: ignore[assignment]

logger = logging.getLogger("quantuna.objective")

METHODS = ("vmhwm", "peak_wset", "ru_maxrss", "sampled")
CLEAR_REFS = "/proc/self/clear_refs"


def proc_status_kib(key: str) -> int | None:
    """A ``/proc/self/status`` field in KiB (VmRSS, VmHWM), None without ``/proc``."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def psutil_rss_kib() -> int | None:
    """This process's resident set in KiB by psutil (None when psutil is not installed)."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss) // 1024


def rss_kib() -> int | None:
    """This process's resident set in KiB: ``/proc`` where it exists, else psutil."""
    found = proc_status_kib("VmRSS")
    return found if found is not None else psutil_rss_kib()


def peak_wset_kib() -> int | None:
    """Windows' peak working set in KiB (psutil), None elsewhere or without psutil."""
    try:
        import psutil
    except ImportError:
        return None
    peak = getattr(psutil.Process().memory_info(), "peak_wset", None)
    return None if peak is None else int(peak) // 1024


def maxrss_kib() -> int | None:
    """``getrusage(RUSAGE_SELF).ru_maxrss`` in KiB (macOS reports bytes), None without it."""
    if resource is None:  # pragma: no cover - Windows
        return None
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss


def choose_method(platform: str | None = None, *, clear_refs: str = CLEAR_REFS) -> str:
    """The method Footprint uses on ``platform`` (default: this one); see the module table."""
    platform = platform or sys.platform
    if platform.startswith("linux") and os.access(clear_refs, os.W_OK):
        return "vmhwm"
    if platform == "win32":
        return "peak_wset"
    return "ru_maxrss"


COUNTERS: dict[str, Callable[[], int | None]] = {"peak_wset": peak_wset_kib, "ru_maxrss": maxrss_kib}


class RssSampler(threading.Thread):
    """Polls ``read()`` (RSS in KiB) every ``interval`` seconds and keeps the maximum."""

    def __init__(self, read: Callable[[], int | None], interval: float = 0.001) -> None:
        super().__init__(name="quantuna-footprint", daemon=True)
        self._read = read
        self._interval = interval
        self._stop_event = threading.Event()
        self.peak = read() or 0

    def run(self) -> None:
        while not self._stop_event.wait(self._interval):
            self.peak = max(self.peak, self._read() or 0)

    def finish(self) -> int:
        """Stop polling; the maximum seen, the current reading included."""
        self._stop_event.set()
        self.join()
        return max(self.peak, self._read() or 0)


class PeakProbe:
    """One region's peak: started by ``__init__``, read by :meth:`finish` (KiB, method)."""

    def __init__(self, method: str, *, clear_refs: str = CLEAR_REFS) -> None:
        if method not in METHODS:
            raise ValueError(f"footprint method {method!r}: use one of {', '.join(METHODS)}")
        if method == "vmhwm" and not _reset_peak(clear_refs):
            method = "ru_maxrss"  # not writable after all (a sandbox): the portable counter
        self.method = method
        self.counter = COUNTERS.get(method)
        self.rss0 = rss_kib()
        self.peak0 = self.counter() if self.counter is not None else None
        self.sampler: RssSampler | None = None
        if method != "vmhwm" and self.rss0 is not None:
            self.sampler = RssSampler(rss_kib)
            self.sampler.start()

    def finish(self) -> tuple[int, str]:
        """The region's peak minus the RSS at the start, in KiB, and the method that measured it."""
        sampled = self.sampler.finish() if self.sampler is not None else None
        if self.method == "vmhwm":
            base = self.rss0 or 0
            return max((proc_status_kib("VmHWM") or base) - base, 0), "vmhwm"
        peak = self.counter() if self.counter is not None else None
        if peak is not None and self.peak0 is not None and peak > self.peak0:
            base = self.rss0 if self.rss0 is not None else self.peak0
            return max(peak - base, 0), self.method  # the region set the process's peak
        if sampled is not None and self.rss0 is not None:
            return max(sampled - self.rss0, 0), "sampled"
        if peak is not None and self.peak0 is not None:
            return 0, self.method  # the counter did not move and nothing else can be read
        logger.warning("Footprint cannot measure memory on this platform (install psutil); recording 0.0")
        return 0, "none"


def _reset_peak(clear_refs: str) -> bool:
    try:
        with open(clear_refs, "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
