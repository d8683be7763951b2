"""``quantuna dashboard`` and ``quantuna report``: the commands that show a study.

:mod:`quantuna.cli.app` adds them with :func:`add_dashboard_parser` and
:func:`add_report_parser`. They print what a person sees; the work is in
:mod:`quantuna.views.dashboard` and :mod:`quantuna.views.report`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from quantuna.cli._common import add_cpu_argument

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def add_dashboard_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``dashboard SPEC [--host H] [--port P] [--storage URL]`` to argparse subparsers."""
    parser = sub.add_parser(
        "dashboard",
        help="open the study in optuna-dashboard",
        description=(
            "Start optuna-dashboard on the spec's storage and artifact directory and print "
            "its URL. "
            "It binds to 127.0.0.1 unless --host says otherwise: anyone who can reach the port can "
            "read and edit the study. Needs the extra: pip install 'quantuna[dashboard]'."
        ),
    )
    parser.add_argument("spec", type=Path, help="the study spec (YAML)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 = any free)")
    parser.add_argument("--storage", help="Optuna storage URL (default: the spec's)")
    parser.set_defaults(handler=cli_dashboard)
    return parser


def add_report_parser(sub: Any) -> argparse.ArgumentParser:
    """Add ``report SPEC -o OUT.html [--png OUT.png] [--storage URL]`` to argparse subparsers."""
    parser = sub.add_parser(
        "report",
        help="write a self-contained HTML report (and a PNG for CI logs)",
        description=(
            "Write one HTML page that opens without a network: the baseline, the accuracy "
            "target, the feasible Pareto set, the export pick, the annotated front (fp32, the "
            "target, the front, the pick circled), and Optuna's interactive plots (Pareto front "
            "with infeasible trials apart, optimisation history, parameter importances). "
            "Needs the extra: pip install 'quantuna[report]'."
        ),
    )
    parser.add_argument("spec", type=Path, help="the study spec (YAML)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the HTML file to write")
    parser.add_argument(
        "--png", type=Path, help="also write the annotated front (the page's picture) as a PNG"
    )
    parser.add_argument(
        "--png-engine",
        choices=["auto", "kaleido", "matplotlib"],
        default="auto",
        help="auto or matplotlib: the annotated front; kaleido: the plotly trade-off figure",
    )
    parser.add_argument("--storage", help="Optuna storage URL (default: the spec's)")
    add_cpu_argument(parser)
    parser.set_defaults(handler=cli_report)
    return parser


def cli_dashboard(args: argparse.Namespace) -> int:
    """Run ``quantuna dashboard``: serve until Ctrl-C; print the URL once listening."""
    from quantuna.errors import QuantunaError
    from quantuna.spec import load_spec
    from quantuna.views.dashboard import MISSING_DASHBOARD, serve

    try:
        import optuna_dashboard  # noqa: F401
    except ImportError:  # before reading the spec: the fix is the same whatever the spec says
        raise QuantunaError(MISSING_DASHBOARD) from None
    spec = load_spec(args.spec, storage=args.storage)
    if args.host not in LOOPBACK:
        print(
            f"quantuna: warning: listening on {args.host}: anyone who can reach this port can "
            "read and edit the study",
            file=sys.stderr,
        )

    def ready(url: str) -> None:
        print(f"optuna-dashboard for study {spec.name!r}: {url}", flush=True)
        print("press Ctrl-C to stop", file=sys.stderr, flush=True)

    try:
        serve(spec, host=args.host, port=args.port, on_ready=ready)
    except KeyboardInterrupt:
        print("\ndashboard stopped", file=sys.stderr)
    return 0


def cli_report(args: argparse.Namespace) -> int:
    """Run ``quantuna report``: write the HTML page (and the PNG) and say where."""
    from quantuna._util import check_output_path
    from quantuna.study.run import load_results
    from quantuna.views.report import write_png, write_report

    check_output_path(args.output, where="-o")  # before any work
    if args.png is not None:
        check_output_path(args.png, where="--png")
    result = load_results(args.spec, storage=args.storage, cpu=args.cpu)
    out = write_report(result, args.output)
    print(f"wrote {out} ({out.stat().st_size // 1024} kB, opens without a network)")
    if args.png is not None:
        engine = write_png(result, args.png, engine=args.png_engine)
        print(f"wrote {args.png} (drawn with {engine})")
    return 0
