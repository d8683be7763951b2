"""The annotated front as a PNG: the one picture the study note and the report both show.

Accuracy (y) against each other objective (x), one panel each, with units on the axes:

- fp32 as a black star named ``fp32``, the accuracy target as a dashed line named with its value;
- the feasible Pareto trials red, connected in order of the x objective, each named ``#N``;
- other feasible trials light blue; infeasible trials faint grey crosses; trials stopped early as
  hopeless faint grey triangles, at the accuracy of the samples they evaluated (an estimate) and
  the latency of their short loop (those an older quantuna pruned with no values are counted in
  the legend);
- the trial ``quantuna export`` would pick circled and named ``export pick #N``.

Labels are placed greedily so they do not overlap each other. It needs only matplotlib (the
``report`` extra); :func:`front_png` returns the PNG bytes, so the study layer can store them as an
artifact without importing the optional viewers.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

from quantuna.errors import QuantunaError
from quantuna.results import TuneResult
from quantuna.summary import baseline_values, format_value, objective_labels

REPORT_EXTRA = "pip install 'quantuna[report]'"
OFFSETS = [(0, 9), (0, -15), (12, -3), (-12, -3), (0, 21), (0, -27), (24, 9), (-24, 9),
           (24, -15), (-24, -15), (0, 33), (0, -39)]  # points from the marker, tried in order
FAINT = "#c8c8c8"
FRONT = "#d62728"
FEASIBLE = "#7fa7d9"


@dataclass
class Panel:
    """Accuracy against one other objective: the points of one panel, by kind."""

    name: str
    x_label: str
    y_label: str
    infeasible: list[tuple[float, float, int]] = field(default_factory=list)
    stopped: list[tuple[float, float, int]] = field(default_factory=list)
    feasible: list[tuple[float, float, int]] = field(default_factory=list)
    front: list[tuple[float, float, int]] = field(default_factory=list)
    fp32: tuple[float, float] | None = None


def panels(result: TuneResult) -> list[Panel]:
    """One :class:`Panel` per objective besides accuracy (a weighted study's too)."""
    labels = dict(zip(result.objective_names, objective_labels(result)))
    y_label = labels.get("accuracy", "accuracy")
    front = {t.number for t in result.pareto}
    base = baseline_values(result)
    out = []
    for name in [n for n in result.objective_names if n != "accuracy"]:
        panel = Panel(name, labels.get(name, name), y_label)
        for t in result.comparable:  # latencies of one CPU only (see quantuna.study.cpus)
            if t.config.is_fp32 or name not in t.values:
                continue  # fp32 is drawn once, as the star
            point = (float(t.values[name]), float(t.values["accuracy"]), t.number)
            kind = (panel.front if t.number in front else panel.feasible if t.feasible
                    else panel.stopped if t.stopped_early else panel.infeasible)
            kind.append(point)
        if name in base and "accuracy" in base:
            panel.fp32 = (float(base[name]), float(base["accuracy"]))
        out.append(panel)
    return out


class _Labels:
    """Greedy label placement in display pixels: each label takes the first free offset."""

    def __init__(self, ax: Any) -> None:
        self.ax = ax
        self.boxes: list[tuple[float, float, float, float]] = []

    def add(self, text: str, xy: tuple[float, float], clear: float = 0, **style: Any) -> None:
        """Annotate ``xy`` at the first offset (at least ``clear`` points away) whose box is free."""
        px, py = self.ax.transData.transform(xy)
        width, height = 6.5 * len(text) + 4, 13
        for dx, dy in [o for o in OFFSETS if max(abs(o[0]), abs(o[1])) >= clear]:
            x0, y0 = px + dx * 1.4 - width / 2, py + dy * 1.4 - height / 2
            box = (x0, y0, x0 + width, y0 + height)
            if not any(_overlap(box, other) for other in self.boxes):
                break
        self.boxes.append(box)
        self.ax.annotate(text, xy, textcoords="offset points", xytext=(dx, dy),
                         ha="center", va="center", fontsize=8, **style)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw(a: Any, panel: Panel, result: TuneResult, pick: int | None, stopped: int) -> None:
    if panel.infeasible:
        a.scatter(*_xy(panel.infeasible), c=FAINT, marker="x", s=30,
                  label=f"infeasible ({len(panel.infeasible)})", zorder=2)
    if panel.stopped:
        a.scatter(*_xy(panel.stopped), c=FAINT, marker="v", s=30, zorder=2,
                  label=f"stopped early, hopeless ({len(panel.stopped)}): accuracy on part of the data")
    if stopped:
        a.scatter([], [], c=FAINT, marker="v", s=30,
                  label=f"stopped early by an older quantuna ({stopped}): no values, not drawn")
    if panel.feasible:
        a.scatter(*_xy(panel.feasible), c=FEASIBLE, s=30, label="feasible", zorder=3)
    line = panel_front(panel.front, *_directions(result, panel.name))
    if panel.front:
        a.scatter(*_xy(panel.front), c=FRONT, s=36, label="feasible Pareto front", zorder=4)
        a.plot(*_xy(line), color=FRONT, linewidth=1.2, zorder=4)
    target = result.baseline.get("accuracy_target")
    if target is not None:
        a.axhline(float(target), color="#555", linestyle="--", linewidth=1,
                  label=f"accuracy target {format_value(float(target))}", zorder=1)
    if panel.fp32 is not None:
        a.scatter(*panel.fp32, c="black", marker="*", s=220, label="fp32", zorder=5)
    a.margins(0.1, 0.18)  # room for the labels inside the axes
    labels = _Labels(a)
    a.figure.canvas.draw()  # fixes the limits before labels are placed
    if panel.fp32 is not None:
        labels.add("fp32", panel.fp32, fontweight="bold")
    for x, y, number in sorted(panel.front):
        if number != pick:
            labels.add(f"#{number}", (x, y), color=FRONT)
    chosen = [p for p in panel.front + panel.feasible + panel.infeasible + panel.stopped if p[2] == pick]
    if chosen:
        x, y, number = chosen[0]
        a.scatter([x], [y], s=420, facecolors="none", edgecolors="black", linewidths=2,
                  label=f"export pick #{number}", zorder=6)
        labels.add(f"export pick #{number}", (x, y), clear=20, fontweight="bold")
    a.set_xlabel(panel.x_label)
    a.set_ylabel(panel.y_label)
    a.grid(alpha=0.3)


def _directions(result: TuneResult, name: str) -> tuple[bool, bool]:
    higher = dict(zip(result.objective_names, result.higher_is_better))
    return higher.get(name, False), higher.get("accuracy", True)


def panel_front(points: list[tuple[float, float, int]], x_higher: bool = False,
                y_higher: bool = True) -> list[tuple[float, float, int]]:
    """The points no other point beats on both of this panel's axes, in order of x: the line.

    The study's front has more objectives than a panel shows, so some of its trials are behind
    others in this projection; they are drawn, but the line joins only the panel's own front.
    """
    ordered = sorted(points, key=lambda p: (-p[0] if x_higher else p[0], -p[1] if y_higher else p[1]))
    out: list[tuple[float, float, int]] = []
    for p in ordered:
        if not out or (p[1] > out[-1][1] if y_higher else p[1] < out[-1][1]):
            out.append(p)
    return out


def _xy(points: list[tuple[float, float, int]]) -> tuple[list[float], list[float]]:
    return [p[0] for p in points], [p[1] for p in points]


def front_png(result: TuneResult, *, width: float = 5.6, dpi: int = 100) -> bytes:
    """The annotated front as PNG bytes (one panel per objective besides accuracy).

    Raises:
        QuantunaError: matplotlib is not installed (the message names the extra).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise QuantunaError(f"matplotlib is not installed: {REPORT_EXTRA}") from None
    shown = panels(result)
    pick = result.pick("weighted").trial.number if result.trials else None
    stopped = len(result.stopped_early) - sum(t.stopped_early for t in result.trials)  # no values
    fig = Figure(figsize=(width * max(1, len(shown)), 5.0), dpi=dpi, layout="constrained")
    axes = fig.subplots(1, max(1, len(shown)), squeeze=False)[0]
    for ax, panel in zip(axes, shown):
        _draw(ax, panel, result, pick, stopped)
    handles, names = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="outside lower center", ncols=min(4, len(handles)), fontsize=8)
    name = result.session.spec.name if result.session is not None else result.study.study_name
    where = (f" timed on {result.cpus.reference.label}" if result.cpus is not None and result.cpus.mixed
             else "")
    fig.suptitle(f"{name}: accuracy against cost ({len(result.comparable)} trials{where}, {result.mode})")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
