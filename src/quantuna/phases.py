"""What a run is doing right now, for whoever shows it: the phase hook.

The library never prints. Each phase that may take more than a second (building the model,
preparing the inputs, the fp32 baseline, the sensitivity ranking, a calibration, the confirm
phase) runs inside :func:`phase`, which logs a record on the ``quantuna.phase`` logger when it
starts and when it ends; the record carries ``phase`` (its name) and ``event`` (``start`` or
``end``, with ``seconds`` and ``ok``). The CLI renders them on stderr (a live status line on a
terminal, plain lines elsewhere, or the progress bar's description); with Python's default
logging set-up they are INFO records like any other.

Example:
    >>> with phase("measuring the fp32 baseline"):  # doctest: +SKIP
    ...     measure()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

LOGGER = "quantuna.phase"
logger = logging.getLogger(LOGGER)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Log the start and the end (with its seconds, and ``ok``: False when an exception or
    Ctrl-C ended it) of a phase named ``name``."""
    start = time.perf_counter()
    logger.info("%s ...", name, extra={"phase": name, "event": "start"})
    ok = False
    try:
        yield
        ok = True
    finally:
        seconds = time.perf_counter() - start
        logger.info("%s: %.1f s" if ok else "%s: stopped after %.1f s", name, seconds,
                    extra={"phase": name, "event": "end", "seconds": seconds, "ok": ok})


def announce(text: str) -> None:
    """A one-off fact the person running the study should read (``event`` ``say``)."""
    logger.info("%s", text, extra={"phase": text, "event": "say"})
