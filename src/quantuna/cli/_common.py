"""What every command shares: logging set-up and the error -> exit status policy."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable

from quantuna._secrets import RedactingFilter, redact_text
from quantuna.errors import QuantunaError, SpecError

Handler = Callable[[argparse.Namespace], int]
MAX_MESSAGE = 280  # characters of an error line (values in it are shortened where they are quoted)
RESUME_HINT = "interrupted: the finished trials are stored; run the same command to resume"


def configure_logging(verbose: int, *, optuna_too: bool) -> None:
    """WARNING by default, INFO with -v, DEBUG with -vv (Optuna's own logger follows)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for handler in logging.getLogger().handlers:  # no password in any log line
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
    if optuna_too:
        import optuna

        optuna.logging.set_verbosity(
            [optuna.logging.ERROR, optuna.logging.INFO, optuna.logging.DEBUG][min(verbose, 2)]
        )


def dispatch(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command: input errors exit 2, other quantuna errors 1, Ctrl-C 130; one line each."""
    try:
        return handler(args)
    except SpecError as exc:
        print(f"quantuna: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except QuantunaError as exc:
        print(f"quantuna: error: {one_line(exc)}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `quantuna show --format json | head`: the reader has what it wanted
        quiet_stdout()
        return 0
    except OSError as exc:  # a file that cannot be read or written: the user's to fix
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"quantuna: error: {one_line(OSError(where + (exc.strerror or str(exc))))}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{RESUME_HINT}", file=sys.stderr)
        return 130


def quiet_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush into a closed pipe is silent."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass
    finally:
        os.close(devnull)


def one_line(exc: BaseException) -> str:
    """An error as one line, passwords masked, at most ``MAX_MESSAGE`` characters."""
    text = " ".join(redact_text(str(exc)).split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 5] + " ..."


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def non_negative_float(text: str) -> float:
    """argparse type: a finite number of seconds >= 0 (0: no limit)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text[:40]!r} is not a number of seconds >= 0")
    return value


CPU_HELP = ("compare the latencies of the trials timed on this CPU (an id or a part of its name, "
            "as the summary lists them); default: the CPU the confirm phase ran on, else this "
            "host's CPU if it timed trials, else the CPU that timed the most")


def add_cpu_argument(parser: argparse.ArgumentParser) -> None:
    """``--cpu ID``: latencies compare only on one CPU; which one (see quantuna.study.cpus)."""
    parser.add_argument("--cpu", metavar="ID", help=CPU_HELP)
