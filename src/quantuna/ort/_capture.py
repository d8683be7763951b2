"""What onnxruntime prints or warns while it calibrates and quantizes goes to quantuna's log.

onnxruntime's quantization tools print to stdout, raise numpy ``RuntimeWarning`` s and log advice
on the *root* logger (``logging.warning(...)``); its weight-only quantizer and transformer optimizer
log on their own named loggers (``onnxruntime.*``, ``neural_compressor``). :func:`captured` takes
all of them for the ``with`` block and re-logs them at debug level on ``quantuna.ort``: the root
logger's level is never touched, so other libraries' records still reach the user.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from collections.abc import Iterator

logger = logging.getLogger("quantuna.ort")


class _OrtRecords(logging.Filter):
    """Drops (after re-logging at debug) the root logger's records made inside onnxruntime."""

    def __init__(self, package_dir: str) -> None:
        super().__init__()
        self.package_dir = package_dir
        self.seen: set[int] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.pathname.startswith(self.package_dir):
            if id(record) not in self.seen:  # one record passes the root and each of its handlers
                self.seen.add(id(record))
                logger.debug("onnxruntime: %s", record.getMessage())
            return False
        return True


class _Relog(logging.Handler):
    """Re-logs a named onnxruntime logger's records at debug level on ``quantuna.ort``."""

    def emit(self, record: logging.LogRecord) -> None:
        logger.debug("onnxruntime (%s): %s", record.name, record.getMessage())


ORT_LOGGERS = ("onnxruntime", "neural_compressor")  # the named loggers onnxruntime's tools use


def _package_dir() -> str:
    import onnxruntime

    return os.path.dirname(onnxruntime.__file__)


@contextlib.contextmanager
def captured(what: str) -> Iterator[None]:
    """Capture onnxruntime's stdout, warnings and root-logger records while doing ``what``."""
    root = logging.getLogger()
    records = _OrtRecords(_package_dir())
    root.addFilter(records)
    # records of any logger made in onnxruntime's files (its transformer tools name loggers by bare
    # module name), at every handler they may reach: root's, or Python's last resort when it has none
    handlers = list(root.handlers) + ([logging.lastResort] if logging.lastResort else [])
    for handler in handlers:
        handler.addFilter(records)
    relog = _Relog()
    named = [log for log in map(logging.getLogger, ORT_LOGGERS)  # nested: the outer one relogs
             if not any(isinstance(h, _Relog) for h in log.handlers)]
    kept = [(log, log.propagate) for log in named]
    for log in named:
        log.addHandler(relog)
        log.propagate = False
    out = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
            warnings.simplefilter("always")
            yield
    finally:
        root.removeFilter(records)
        for handler in handlers:
            handler.removeFilter(records)
        for log, propagate in kept:
            log.removeHandler(relog)
            log.propagate = propagate
    for warning in caught:
        logger.debug("%s: %s: %s", what, warning.category.__name__, warning.message)
    if out.getvalue().strip():
        logger.debug("%s printed: %s", what, out.getvalue().strip()[:2000])


@contextlib.contextmanager
def scratch_cwd(prefix: str) -> Iterator[None]:
    """Run the block in a fresh temporary working directory, removed afterwards.

    onnxruntime's symbolic shape inference saves ``sym_shape_infer_temp.onnx`` (and ``<uuid>.data``)
    into the *working directory* when it cannot infer every shape; this keeps the user's directory
    clean. The working directory is process-wide: use it only around single-threaded steps (the
    model's preparation and fusion, once per model), with absolute paths inside.
    """
    import tempfile

    before = os.getcwd()
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.chdir(tmp)
        try:
            yield
        finally:
            os.chdir(before)
