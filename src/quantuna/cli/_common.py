"""What every command shares: logging set-up and the error -> exit status policy."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from quantuna.errors import QuantunaError, SpecError

Handler = Callable[[argparse.Namespace], int]
RESUME_HINT = "interrupted: the finished trials are stored; run the same command to resume"


def configure_logging(verbose: int, *, optuna_too: bool) -> None:
    """WARNING by default, INFO with -v, DEBUG with -vv (Optuna's own logger follows)."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
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
        print(f"quantuna: error: {exc}", file=sys.stderr)
        return 2
    except QuantunaError as exc:
        print(f"quantuna: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\n{RESUME_HINT}", file=sys.stderr)
        return 130


def positive_int(text: str) -> int:
    """argparse type: a whole number >= 1."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)
