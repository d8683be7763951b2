"""The trade-off picture: accuracy against each other objective, as plotly or a PNG.

One panel per objective besides accuracy, with the infeasible trials grey, the feasible Pareto
trials labelled, the fp32 baseline and the accuracy target. The HTML report embeds the plotly
figure below the annotated front; ``write_png`` writes that front (or this figure with kaleido).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from quantuna._util import atomic_write
from quantuna.errors import QuantunaError
from quantuna.frontplot import front_png
from quantuna.results import TuneResult
from quantuna.summary import baseline_values, objective_labels

logger = logging.getLogger(__name__)
REPORT_EXTRA = "pip install 'quantuna[report]'"


def require_plotly() -> None:
    """Raise a QuantunaError naming the install command when plotly is missing."""
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise QuantunaError(f"plotly is not installed: {REPORT_EXTRA}") from None


def write_png(result: TuneResult, png: Path, *, engine: str = "auto") -> str:
    """Write the picture for CI logs.

    ``auto`` and ``matplotlib`` write the annotated front (:func:`quantuna.frontplot.front_png`:
    the same bytes as the HTML report's picture and the study note's); ``kaleido`` exports the
    plotly :func:`tradeoff_figure` (it drives a local Chrome or Chromium).

    Args:
        result: a :class:`~quantuna.results.TuneResult`.
        png: the file to write.
        engine: ``auto``, ``matplotlib`` or ``kaleido``.

    Returns:
        The engine that wrote the file.
    """
    if engine not in ("auto", "kaleido", "matplotlib"):
        raise QuantunaError(f"PNG engine {engine!r}: use auto, kaleido or matplotlib")
    if engine == "kaleido":
        png.parent.mkdir(parents=True, exist_ok=True)
        try:
            _png_kaleido(result, png)
        except Exception as exc:  # kaleido missing, or no browser for it to drive
            raise QuantunaError(f"kaleido could not write {png}: {exc}") from exc
        return "kaleido"
    atomic_write(png, front_png(result))
    return "matplotlib"


@dataclasses.dataclass
class _Panel:
    """Accuracy (y) against one other objective (x), every complete trial as a point."""

    x_label: str
    y_label: str
    points: dict[str, list[tuple[float, float, int]]]  # infeasible | feasible | pareto
    baseline: tuple[float, float] | None
    target: float | None


def _panels(result: TuneResult) -> list[_Panel]:
    labels = dict(zip(result.objective_names, objective_labels(result)))
    metric = result.session.metric.name if result.session is not None else "metric"
    y_label = labels.get("accuracy", f"accuracy ({metric})")
    pareto = {t.number for t in result.pareto}
    base = baseline_values(result)
    others = [n for n in result.objective_names if n != "accuracy"] or ["trial"]
    panels = []
    for name in others:
        points: dict[str, list[tuple[float, float, int]]] = {
            "infeasible": [],
            "stopped": [],
            "feasible": [],
            "pareto": [],
        }
        for t in result.comparable:  # latencies of one CPU only (see quantuna.study.cpus)
            kind = ("pareto" if t.number in pareto else "feasible" if t.feasible
                    else "stopped" if t.stopped_early else "infeasible")
            x = float(t.number) if name == "trial" else t.values[name]
            points[kind].append((x, t.values["accuracy"], t.number))
        b = (base[name], base["accuracy"]) if name in base and "accuracy" in base else None
        target = result.baseline.get("accuracy_target")
        panels.append(_Panel(labels.get(name, name), y_label, points, b, target))
    return panels


_STYLE = {  # kind: (legend label, colour, marker)
    "infeasible": ("infeasible", "#bbbbbb", "x"),
    "stopped": ("stopped early (accuracy on part of the data)", "#cccccc", "triangle-down"),
    "feasible": ("feasible", "#7fa7d9", "o"),
    "pareto": ("feasible Pareto", "#d62728", "o"),
}


def tradeoff_figure(result: TuneResult) -> Any:
    """Accuracy against each other objective, every complete trial, as one plotly figure.

    Infeasible trials are grey crosses (stopped-early ones grey triangles), the feasible Pareto trials red and labelled, fp32 a star,
    the accuracy target a dashed line. It reads quantuna's measured values, so it also shows the
    objectives of a weighted study (whose only Optuna value is the score).
    """
    require_plotly()
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
                        "symbol": marker if marker != "o" else "circle",
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


def _png_kaleido(result: TuneResult, png: Path) -> None:
    import kaleido  # noqa: F401  (fail fast when it is missing)

    fig = tradeoff_figure(result)
    fig.write_image(str(png), width=560 * len(_panels(result)), height=520)


def _png_title(result: TuneResult) -> str:
    name = result.session.spec.name if result.session is not None else result.study.study_name
    return f"{name}: accuracy vs cost (dashed: accuracy target)"
