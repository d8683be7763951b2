"""``quantuna``'s entry point: the parser, the command table and the dispatch."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from quantuna.cli import export, inspect, run, view
from quantuna.cli._common import configure_logging, dispatch

EPILOG = """\
a typical session:
  quantuna validate studies/digits.yaml           check spec, model and data; show the space
  quantuna run studies/digits.yaml                run (or resume) the study
  quantuna show studies/digits.yaml               the feasible Pareto set in the terminal
  quantuna dashboard studies/digits.yaml          optuna-dashboard on 127.0.0.1
  quantuna report studies/digits.yaml -o report.html
  quantuna export studies/digits.yaml -o best.yaml --model best.onnx
  quantuna apply best.yaml --model model.onnx -o model.int8.onnx
"""
# the commands that open an Optuna study (their Optuna logging follows -v)
STUDY_COMMANDS = ("run", "show", "export", "dashboard", "report")


class OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr, exit status 2 (``--help`` still teaches)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``quantuna`` parser: one sub-command per verb, each with its handler."""
    parser = OneLineParser(
        prog="quantuna",
        description="Search the int8 quantization configurations of an ONNX model with Optuna.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log more (-vv: debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    run.add_parser(sub)
    inspect.add_parsers(sub)
    export.add_parsers(sub)
    view.add_dashboard_parser(sub)
    view.add_report_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``quantuna`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.version:
        from quantuna import __version__

        print(f"quantuna {__version__}")
        return 0
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    configure_logging(args.verbose, optuna_too=args.command in STUDY_COMMANDS)
    return dispatch(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
