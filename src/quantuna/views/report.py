"""``write_report()``: a study as one self-contained HTML page, and optionally a PNG for CI logs.

The page holds the study's summary (baseline, accuracy target, feasible Pareto set, the trial the
export would pick), the annotated front (:func:`quantuna.frontplot.front_png`, the same picture
as the study note's and ``--png``'s: fp32, the target, the connected feasible front, infeasible
trials faint, the export pick circled and named), and Optuna's own interactive plots: the Pareto front with feasible and infeasible trials
apart, the optimisation history of each objective and the parameter importances. plotly.js is
inlined, so the page opens without a network.

plotly (and matplotlib for the PNG fallback) are an extra: ``pip install 'quantuna[report]'``.

Example:
    >>> result = quantuna.load_results("studies/digits.yaml")  # doctest: +SKIP
    >>> write_report(result, Path("report.html"), png=Path("pareto.png"))  # doctest: +SKIP
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantuna._util import atomic_write
from quantuna.errors import QuantunaError
from quantuna.frontplot import front_png
from quantuna.results import TuneResult
from quantuna.summary import NO_FEASIBLE, objective_labels, summarize
from quantuna.views.tradeoff import require_plotly, tradeoff_figure, write_png

logger = logging.getLogger(__name__)
MIN_TRIALS_FOR_IMPORTANCE = 2


# --- the figures ------------------------------------------------------------------------------


def importance_params(study: Any) -> tuple[list[str], int] | str:
    """The parameters to rank, and how many trials set them all; or why there are none.

    quantuna's space is conditional (a dynamic trial has no calibration method, the fp32 trial
    only its op types), so Optuna's default, the parameters every trial has, would rank almost
    nothing. This takes the parameters at least half of the complete trials set and ranks them
    over the trials that set them all (Optuna's own filtering when ``params`` is given).
    """
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        return f"parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} complete trials"
    counts: dict[str, int] = {}
    for t in complete:
        for name in t.params:
            counts[name] = counts.get(name, 0) + 1
    common = [n for n, c in counts.items() if 2 * c >= len(complete)]
    pool = [t for t in complete if all(n in t.params for n in common)]
    varied = [n for n in common if len({repr(t.params[n]) for t in pool}) > 1]
    pool = [t for t in complete if all(n in t.params for n in varied)]
    if not varied or len(pool) < MIN_TRIALS_FOR_IMPORTANCE:
        return "parameter importances need at least two trials that set a parameter differently"
    return sorted(varied), len(pool)


def _figures(result: TuneResult) -> list[tuple[str, Any]]:
    """(title, plotly figure or a note string) in the order the page shows them."""
    import optuna.visualization as vis

    study = result.study
    labels = objective_labels(result)
    out: list[tuple[str, Any]] = []
    n = len(result.objective_names)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ExperimentalWarning of the visualisation functions
        if result.mode == "pareto" and n in (2, 3):
            fig = vis.plot_pareto_front(study, target_names=labels)
            out.append(("Pareto front (feasible vs infeasible)", _name_infeasible(fig)))
        if result.mode == "pareto" and n >= 3:
            acc = (
                result.objective_names.index("accuracy")
                if "accuracy" in result.objective_names
                else 0
            )
            for i in range(n):
                if i == acc:
                    continue
                fig = vis.plot_pareto_front(
                    study,
                    targets=_pair(i, acc),
                    target_names=[labels[i], labels[acc]],
                )
                out.append((f"{labels[acc]} vs {labels[i]}", _name_infeasible(fig)))
        if result.mode == "pareto":
            for i, label in enumerate(labels):
                fig = vis.plot_optimization_history(study, target=_value(i), target_name=label)
                out.append((f"Optimisation history: {label}", fig))
        else:
            out.append(("Accuracy against cost (feasible vs infeasible)", tradeoff_figure(result)))
            label = study.metric_names[0] if study.metric_names else "weighted score"
            history = vis.plot_optimization_history(study, target_name=label)
            out.append(("Optimisation history", history))
        chosen = importance_params(study)
        if isinstance(chosen, str):
            out.append(("Parameter importances", f"not available: {chosen}"))
        else:
            params, n_trials = chosen
            title = f"Parameter importances (over the {n_trials} trials that set them all)"
            try:
                out.append((title, vis.plot_param_importances(study, params=params)))
            except (ValueError, RuntimeError) as exc:
                out.append(("Parameter importances", f"not available: {exc}"))
    return out


INFEASIBLE_HOVER = "<extra>Infeasible Trial</extra>"
INFEASIBLE_NAME = "infeasible (misses the accuracy target)"


def _name_infeasible(fig: Any) -> Any:
    """Give Optuna's grey infeasible-trial trace a name and a legend entry."""
    for trace in fig.data:
        if str(getattr(trace, "hovertemplate", "") or "").endswith(INFEASIBLE_HOVER):
            trace.update(name=INFEASIBLE_NAME, showlegend=True)
    fig.update_layout(legend={"orientation": "h", "x": 0, "y": -0.12})
    return fig


def _value(i: int) -> Callable[[Any], float]:
    return lambda t: float(t.values[i])


def _pair(x: int, y: int) -> Callable[[Any], list[float]]:
    return lambda t: [float(t.values[x]), float(t.values[y])]


# --- the page ---------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; }
th { background: #f2f2f2; }
dt { font-weight: bold; float: left; clear: left; width: 12em; }
dd { margin-left: 13em; margin-bottom: 0.3em; }
section { margin-top: 2em; }
.note { color: #666; font-style: italic; }
img.front { max-width: 100%; }
"""


def _summary_html(result: TuneResult) -> str:
    summary = summarize(result)
    facts = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in summary.facts.items()
    )
    head = "".join(f"<th>{html.escape(h)}</th>" for h in summary.header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in summary.rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if not summary.has_front:
        table += f'<p class="note">{html.escape(summary.best_effort or NO_FEASIBLE)}</p>'
    return f"<dl>{facts}</dl><h2>Feasible Pareto set</h2>{table}"


FRONT_TITLE = "Accuracy against cost: fp32, the target, the front and the pick"


def _front_html(result: TuneResult) -> str:
    """The annotated front as an inlined PNG (the same bytes ``--png`` writes)."""
    if not result.trials:
        return ""
    try:
        data = base64.b64encode(front_png(result)).decode("ascii")
    except QuantunaError as exc:
        return f'<section><h2>{FRONT_TITLE}</h2><p class="note">{html.escape(str(exc))}</p></section>'
    return (f'<section><h2>{FRONT_TITLE}</h2><img class="front" alt="the annotated front" '
            f'src="data:image/png;base64,{data}"></section>')


def render_html(result: TuneResult) -> str:
    """The report page as one HTML string (plotly.js inlined once)."""
    require_plotly()
    parts = []
    first = True
    for title, fig in _figures(result):
        if isinstance(fig, str):
            body = f'<p class="note">{html.escape(fig)}</p>'
        else:
            fig.update_layout(title_text="", margin={"t": 30})  # the section heading names it
            body = fig.to_html(
                include_plotlyjs=first, full_html=False, config={"displaylogo": False}
            )
            first = False
        parts.append(f"<section><h2>{html.escape(title)}</h2>{body}</section>")
    if result.cpus is not None and result.cpus.mixed:
        parts.insert(0, '<p class="note">The figures below are Optuna\'s and plot every trial, '
                     f"timed on {len(result.cpus.trials)} CPUs whose latencies do not compare; "
                     "the table and the annotated front above are those of "
                     f"{html.escape(result.cpus.reference.label)} only.</p>")
    name = result.session.spec.name if result.session is not None else result.study.study_name
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from quantuna import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>quantuna report: {html.escape(name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>quantuna study {html.escape(name)}</h1>{_summary_html(result)}{_front_html(result)}"
        f"{''.join(parts)}"
        f'<p class="note">written {stamp} by quantuna {__version__}</p></body></html>\n'
    )


def write_report(
    result: TuneResult, out: Path, *, png: Path | None = None, png_engine: str = "auto"
) -> Path:
    """Write a study's report as a self-contained HTML page, and optionally a PNG.

    Args:
        result: a :class:`~quantuna.results.TuneResult` (``quantuna.tune`` or ``load_results``).
        out: the HTML file to write.
        png: also write the annotated front (the page's picture) as a PNG here.
        png_engine: ``auto`` or ``matplotlib`` (the annotated front), or ``kaleido`` (the
            plotly trade-off figure).

    Returns:
        The HTML file written.

    Raises:
        QuantunaError: plotly (or matplotlib for the PNG) is not installed; the message names
            the ``pip install`` command.
    """
    out = Path(out)
    page = render_html(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, page)
    logger.info("wrote %s (%d kB)", out, len(page) // 1024)
    if png is not None:
        engine = write_png(result, Path(png), engine=png_engine)
        logger.info("wrote %s with %s", png, engine)
    return out
