"""``serve()``: optuna-dashboard on a study's storage and artifact directory.

The trial artifacts and the study note it shows are written by :mod:`quantuna.study.artifacts`
during the run. Feasibility: optuna-dashboard 0.21 reads only the legacy ``constraints`` trial
system attribute, so each trial writes it beside Optuna 5's ``trial.set_constraint``; the
dashboard's Pareto chart, timeline and "include infeasible trials" filter then see quantuna's
infeasible trials. Its "Best Trials" ignore constraints altogether; :func:`serve` corrects them
(:func:`quantuna._compat.feasible_best_trials`).

optuna-dashboard is an extra: ``pip install 'quantuna[dashboard]'``; without it :func:`serve`
raises a :class:`~quantuna.errors.QuantunaError`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler

from quantuna.errors import QuantunaError
from quantuna.spec import StudySpec

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)
DASHBOARD_EXTRA = "pip install 'quantuna[dashboard]'"
MISSING_DASHBOARD = f"optuna-dashboard is not installed: {DASHBOARD_EXTRA}"


class _QuietHandler(WSGIRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def study_path(spec: StudySpec, storage: optuna.storages.BaseStorage) -> str:
    """The dashboard's path of the spec's study (``/dashboard/studies/<id>``), or its home page."""
    try:
        return f"/dashboard/studies/{storage.get_study_id_from_name(spec.name)}"
    except KeyError:  # no such study yet
        return "/dashboard/"


def serve(
    spec: StudySpec,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Run optuna-dashboard on the spec's storage and artifact directory until interrupted.

    It serves ``optuna_dashboard.wsgi`` (the app ``optuna_dashboard.run_server`` runs) from a
    threaded wsgiref server that binds first, so a busy port is a clear error and port 0 picks a
    free one. The dashboard's "Best Trials" honour the accuracy constraint (see
    :func:`quantuna._compat.feasible_best_trials`).

    Args:
        spec: the study spec.
        host: the address to bind (default loopback only: the dashboard can edit the study).
        port: the port; 0 picks a free one.
        on_ready: called with the study's URL once the server listens.

    Raises:
        QuantunaError: optuna-dashboard is not installed, or the address cannot be bound.
        SpecError: the spec's SQLite storage does not exist yet.
    """
    try:
        import optuna_dashboard
    except ImportError:
        raise QuantunaError(MISSING_DASHBOARD) from None
    import socket
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    class _Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

    from quantuna._compat import feasible_best_trials
    from quantuna.study.artifacts import artifact_store
    from quantuna.study.storage import make_storage, require_existing

    require_existing(spec.storage, where=spec.where)
    storage = make_storage(spec.storage)
    feasible_best_trials(storage)
    app = optuna_dashboard.wsgi(storage, artifact_store=artifact_store(spec))
    try:
        httpd = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    except OSError as exc:
        hint = "; pick another --port" if exc.errno == errno.EADDRINUSE else ""
        raise QuantunaError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}"
        ) from None
    bound_port = httpd.server_address[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound_port}{study_path(spec, storage)}"
    logger.info("optuna-dashboard for study %r at %s", spec.name, url)
    if on_ready is not None:
        on_ready(url)
    try:
        httpd.serve_forever()
    finally:
        httpd.server_close()
