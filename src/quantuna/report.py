"""``write_report()``: a study as one self-contained HTML page, and optionally a PNG for CI logs.

The page holds the study's summary (baseline, accuracy target, feasible Pareto set, the trial the
export would pick) and Optuna's own plots: the Pareto front with feasible and infeasible trials
apart, the optimisation history of each objective and the parameter importances. plotly.js is
inlined, so the page opens without a network.

plotly (and matplotlib for the PNG fallback) are an extra: ``pip install 'quantuna[report]'``.

Example:
    >>> result = quantuna.load_results("studies/digits.yaml")  # doctest: +SKIP
    >>> write_report(result, Path("report.html"), png=Path("pareto.png"))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import html
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from quantuna.errors import QuantunaError
from quantuna.results import format_value as _fmt
from quantuna.results import objective_labels as metric_labels
from quantuna.results import pareto_rows as summary_table

logger = logging.getLogger(__name__)
REPORT_EXTRA = "pip install 'quantuna[report]'"
MIN_TRIALS_FOR_IMPORTANCE = 2


# --- the summary, shared with the dashboard's study note -------------------------------------


def summary_facts(result: Any) -> dict[str, str]:
    """One-line facts about a study: name, mode, trials, target, the export pick."""
    session = result.session
    name = session.spec.name if session is not None else result.study.study_name
    metric = session.metric.name if session is not None else "accuracy"
    criterion = {k: v for k, v in result.accuracy_criterion.items() if k != "higher_is_better"}
    feasible = sum(1 for t in result.trials if t.feasible)
    base_accuracy = result.baseline.get("values", {}).get("accuracy")
    facts = {
        "study": f"{name} ({result.mode})",
        "trials": (
            f"{len(result.trials)} complete ({feasible} feasible), {len(result.failed)} failed, "
            f"{len(result.pareto)} on the feasible Pareto front"
        ),
        "accuracy target": (
            f"{metric} {'>=' if result.accuracy_criterion.get('higher_is_better', True) else '<='} "
            f"{_fmt(result.baseline.get('accuracy_target'))} "
            f"(fp32 {_fmt(base_accuracy)}, criterion {criterion})"
        ),
    }
    if result.trials:
        pick = result.pick("weighted")
        facts["export pick"] = (
            f"trial {pick.trial.number} by Neural Compressor's weighted rule"
            + ("" if pick.feasible else " (does not meet the accuracy target)")
            + f": {pick.trial.summary}"
        )
    return facts


# --- the figures ------------------------------------------------------------------------------


def _require_plotly() -> None:
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise QuantunaError(f"plotly is not installed: {REPORT_EXTRA}") from None


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


def _figures(result: Any) -> list[tuple[str, Any]]:
    """(title, plotly figure or a note string) in the order the page shows them."""
    import optuna.visualization as vis

    study = result.study
    labels = metric_labels(result)
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
dt { font-weight: bold; float: left; clear: left; width: 9em; }
dd { margin-left: 10em; margin-bottom: 0.3em; }
section { margin-top: 2em; }
.note { color: #666; font-style: italic; }
"""


def _summary_html(result: Any) -> str:
    facts = "".join(
        f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>"
        for k, v in summary_facts(result).items()
    )
    header, rows = summary_table(result)
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if not result.pareto:
        table += '<p class="note">no trial meets the accuracy target yet</p>'
    return f"<dl>{facts}</dl><h2>Feasible Pareto set</h2>{table}"


def render_html(result: Any) -> str:
    """The report page as one HTML string (plotly.js inlined once)."""
    _require_plotly()
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
    name = result.session.spec.name if result.session is not None else result.study.study_name
    stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    from quantuna import __version__

    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>quantuna report: {html.escape(name)}</title><style>{_CSS}</style></head><body>"
        f"<h1>quantuna study {html.escape(name)}</h1>{_summary_html(result)}{''.join(parts)}"
        f'<p class="note">written {stamp} by quantuna {__version__}</p></body></html>\n'
    )


def write_png(result: Any, png: Path, *, engine: str = "auto") -> str:
    """Write the trade-off picture for CI logs: accuracy against each other objective.

    One panel per objective besides accuracy, with the infeasible trials grey, the feasible
    Pareto trials labelled, the fp32 baseline and the accuracy target (see
    :func:`tradeoff_figure`); it also shows a weighted study's objectives.

    Args:
        result: a :class:`~quantuna.results.TuneResult`.
        png: the file to write.
        engine: ``kaleido`` (plotly's exporter; it drives a local Chrome or Chromium),
            ``matplotlib``, or ``auto``: kaleido when it works, else matplotlib.

    Returns:
        The engine that wrote the file.
    """
    if engine not in ("auto", "kaleido", "matplotlib"):
        raise QuantunaError(f"PNG engine {engine!r}: use auto, kaleido or matplotlib")
    png.parent.mkdir(parents=True, exist_ok=True)
    if engine in ("auto", "kaleido"):
        try:
            _png_kaleido(result, png)
            return "kaleido"
        except Exception as exc:  # kaleido missing, or no browser for it to drive
            if engine == "kaleido":
                raise QuantunaError(f"kaleido could not write {png}: {exc}") from exc
            logger.info("kaleido could not write the PNG (%s); using matplotlib", exc)
    _png_matplotlib(result, png)
    return "matplotlib"


@dataclasses.dataclass
class _Panel:
    """Accuracy (y) against one other objective (x), every complete trial as a point."""

    x_label: str
    y_label: str
    points: dict[str, list[tuple[float, float, int]]]  # infeasible | feasible | pareto
    baseline: tuple[float, float] | None
    target: float | None


def _panels(result: Any) -> list[_Panel]:
    labels = dict(zip(result.objective_names, metric_labels(result)))
    metric = result.session.metric.name if result.session is not None else "metric"
    y_label = labels.get("accuracy", f"accuracy ({metric})")
    pareto = {t.number for t in result.pareto}
    base = result.baseline.get("values", {})
    others = [n for n in result.objective_names if n != "accuracy"] or ["trial"]
    panels = []
    for name in others:
        points: dict[str, list[tuple[float, float, int]]] = {
            "infeasible": [],
            "feasible": [],
            "pareto": [],
        }
        for t in result.trials:
            kind = "pareto" if t.number in pareto else ("feasible" if t.feasible else "infeasible")
            x = float(t.number) if name == "trial" else t.values[name]
            points[kind].append((x, t.values["accuracy"], t.number))
        b = (base[name], base["accuracy"]) if name in base and "accuracy" in base else None
        target = result.baseline.get("accuracy_target")
        panels.append(_Panel(labels.get(name, name), y_label, points, b, target))
    return panels


_STYLE = {  # kind: (legend label, colour, marker)
    "infeasible": ("infeasible", "#bbbbbb", "x"),
    "feasible": ("feasible", "#7fa7d9", "o"),
    "pareto": ("feasible Pareto", "#d62728", "o"),
}


def tradeoff_figure(result: Any) -> Any:
    """Accuracy against each other objective, every complete trial, as one plotly figure.

    Infeasible trials are grey crosses, the feasible Pareto trials red and labelled, fp32 a star,
    the accuracy target a dashed line. It reads quantuna's measured values, so it also shows the
    objectives of a weighted study (whose only Optuna value is the score).
    """
    _require_plotly()
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    panels = _panels(result)
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p.x_label for p in panels])
    for col, panel in enumerate(panels, start=1):
        if panel.baseline is not None:
            fig.add_trace(
                go.Scatter(
                    x=[panel.baseline[0]],
                    y=[panel.baseline[1]],
                    mode="markers",
                    marker={"color": "black", "size": 14, "symbol": "star"},
                    name="fp32",
                    legendgroup="fp32",
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        for kind, pts in panel.points.items():
            label, colour, marker = _STYLE[kind]
            fig.add_trace(
                go.Scatter(
                    x=[p[0] for p in pts],
                    y=[p[1] for p in pts],
                    mode="markers+text" if kind == "pareto" else "markers",
                    text=[f"#{p[2]}" for p in pts],
                    textposition="top center",
                    marker={
                        "color": colour,
                        "size": 10,
                        "symbol": "x" if marker == "x" else "circle",
                    },
                    name=label,
                    legendgroup=kind,
                    showlegend=col == 1,
                ),
                row=1,
                col=col,
            )
        if panel.target is not None:
            fig.add_hline(y=panel.target, line_dash="dash", line_color="#555", row=1, col=col)
        fig.update_xaxes(title_text=panel.x_label, row=1, col=col)
        fig.update_yaxes(title_text=panel.y_label, row=1, col=col)
    fig.update_layout(title=_png_title(result), template="plotly_white")
    return fig


def _png_kaleido(result: Any, png: Path) -> None:
    import kaleido  # noqa: F401  (fail fast when it is missing)

    fig = tradeoff_figure(result)
    fig.write_image(str(png), width=560 * len(_panels(result)), height=520)


def _png_title(result: Any) -> str:
    name = result.session.spec.name if result.session is not None else result.study.study_name
    return f"{name}: accuracy vs cost (dashed: accuracy target)"


def _png_matplotlib(result: Any, png: Path) -> None:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise QuantunaError(f"matplotlib is not installed: {REPORT_EXTRA}") from None
    panels = _panels(result)
    fig = Figure(figsize=(5.6 * len(panels), 5.2), dpi=100, layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, panel in zip(axes, panels):
        if panel.baseline is not None:
            ax.scatter(
                [panel.baseline[0]],
                [panel.baseline[1]],
                c="black",
                marker="*",
                s=150,
                label="fp32",
                zorder=1,
            )
        for kind, pts in panel.points.items():
            label, colour, marker = _STYLE[kind]
            ax.scatter(
                [p[0] for p in pts],
                [p[1] for p in pts],
                c=colour,
                marker=marker,
                label=label,
                zorder=2,
            )
            if kind == "pareto":
                for x, y, number in pts:
                    ax.annotate(
                        f"#{number}",
                        (x, y),
                        textcoords="offset points",
                        xytext=(0, 6),
                        ha="center",
                        fontsize=8,
                    )
        if panel.target is not None:
            ax.axhline(panel.target, color="#555", linestyle="--", linewidth=1)
        ax.set_xlabel(panel.x_label)
        ax.set_ylabel(panel.y_label)
        ax.set_title(panel.x_label)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="best", fontsize=8)
    fig.suptitle(_png_title(result))
    fig.savefig(str(png))


def write_report(
    result: Any, out: Path, *, png: Path | None = None, png_engine: str = "auto"
) -> Path:
    """Write a study's report as a self-contained HTML page, and optionally a PNG.

    Args:
        result: a :class:`~quantuna.results.TuneResult` (``quantuna.tune`` or ``load_results``).
        out: the HTML file to write.
        png: also write the Pareto front (weighted mode: the history) as a PNG here.
        png_engine: ``auto`` (kaleido, else matplotlib), ``kaleido`` or ``matplotlib``.

    Returns:
        The HTML file written.

    Raises:
        QuantunaError: plotly (or matplotlib for the PNG) is not installed; the message names
            the ``pip install`` command.
    """
    out = Path(out)
    page = render_html(result)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    logger.info("wrote %s (%d kB)", out, len(page) // 1024)
    if png is not None:
        engine = write_png(result, Path(png), engine=png_engine)
        logger.info("wrote %s with %s", png, engine)
    return out
