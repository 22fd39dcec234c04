"""Server-side SVG charts of the SMART app (matplotlib's SVG backend): no script, no external font.

Text stays text (`svg.fonttype: none`, a system sans-serif), so the chart is sharp when printed and
readable by assistive technology; each SVG gets `role="img"`, a `<title>` and a `<desc>` summary, and the
page repeats every point in a data table. Colours are the Okabe-Ito palette (colour-blind safe), each
site also has its own marker and line style, so no meaning rests on colour alone.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import date, timedelta
from typing import Final
from xml.sax.saxutils import escape

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.backends.backend_svg import FigureCanvasSVG
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from cds_service.present.smart_view import (
    PatientView,
    Point,
    TargetLine,
    TreatmentRow,
    points_by_site,
    site_label,
)

mpl.rcParams.update(
    {
        "svg.fonttype": "none",
        "svg.hashsalt": "osteo-smart",  # stable element ids: the same record draws the same SVG
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
        "font.size": 10,
        "axes.edgecolor": "#333333",
        "axes.labelcolor": "#1a1a1a",
        "xtick.color": "#1a1a1a",
        "ytick.color": "#1a1a1a",
    }
)

SITE_STYLES: Final = {
    "total_hip": ("#0072B2", "o", "-"),
    "femoral_neck": ("#D55E00", "s", "--"),
    "lumbar_spine": ("#009E73", "^", "-."),
    "radius": ("#CC79A7", "D", ":"),
    "other": ("#555555", "v", "-"),
    "unknown": ("#555555", "x", ":"),
}
TARGET_COLOUR: Final = "#1a1a1a"  # the treat-to-target T-score line
SCANNER_COLOUR: Final = "#5A5A5A"
_SVG_OPEN: Final = re.compile(r"<svg\b[^>]*>")


def _svg(figure: Figure, title: str, description: str, element_id: str) -> str:
    buffer = io.StringIO()
    FigureCanvasSVG(figure).print_svg(  # type: ignore[no-untyped-call]
        buffer, metadata={"Date": None, "Creator": None}
    )
    text = buffer.getvalue()
    text = text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: the SVG is inlined in HTML
    match = _SVG_OPEN.search(text)
    assert match is not None
    opening = match.group(0)[:-1] + (
        f' role="img" aria-labelledby="{element_id}-title {element_id}-desc" id="{element_id}" '
        'focusable="false">'
    )
    labels = (
        f'<title id="{element_id}-title">{escape(title)}</title>'
        f'<desc id="{element_id}-desc">{escape(description)}</desc>'
    )
    return opening + labels + text[match.end() :]


def _figure(height: float, *, left: float, right: float, bottom_in: float = 0.45) -> Figure:
    """Fixed margins (a constrained layout costs several extra draws: the page must render in < 1 s)."""
    figure = Figure(figsize=(10.5, height), dpi=72)
    figure.patch.set_facecolor("white")
    figure.subplots_adjust(left=left, right=right, top=1 - 0.15 / height, bottom=bottom_in / height)
    return figure


def _chart_x(day: date) -> float:
    return float(date2num(day))  # type: ignore[no-untyped-call]


def _describe(points: Sequence[Point], unit: str) -> str:
    parts = []
    for site, found in points_by_site(tuple(points)).items():
        values = ", ".join(
            f"{p.day.isoformat()}{' ' + p.side if p.side else ''} {p.value}{unit}" for p in found
        )
        parts.append(f"{site_label(site)}: {values}")
    return "; ".join(parts) + "." if parts else "No values."


def bmd_chart(view: PatientView, kind: str) -> str | None:
    """T-scores (kind `t_score`) or BMD in g/cm² (`bmd`) per site over time; None without values."""
    points = view.t_scores if kind == "t_score" else view.bmd_values
    if not points:
        return None
    figure = _figure(3.9, left=0.08, right=0.66)
    axes = figure.add_subplot()
    for site, found in points_by_site(points).items():
        colour, marker, style = SITE_STYLES.get(site, SITE_STYLES["other"])
        axes.plot(
            [_chart_x(p.day) for p in found],
            [float(p.value) for p in found],
            color=colour,
            marker=marker,
            linestyle=style,
            linewidth=1.8,
            markersize=6,
            label=site_label(site),
            gid=f"series-{kind}-{site}",
        )
    targets = [t for t in view.targets if t.kind == kind]
    for target in targets:
        _target(axes, target)
    if kind == "t_score" and view.treat_to_target_t is not None:
        axes.axhline(
            float(view.treat_to_target_t),
            color=TARGET_COLOUR,
            linestyle=(0, (1, 2)),
            linewidth=1,
            label=f"Treat-to-target T-score {view.treat_to_target_t}",
        )
    for index, day in enumerate(view.scanner_changes):
        axes.axvline(
            _chart_x(day),
            color=SCANNER_COLOUR,
            linestyle=(0, (4, 3)),
            linewidth=1.2,
            label="Scanner changed" if index == 0 else None,
            gid=f"scanner-change-{kind}-{index}",
        )
        axes.annotate(
            "scanner changed",
            xy=(_chart_x(day), 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(-4, -4),
            textcoords="offset points",
            ha="right",
            va="top",
            fontsize=8,
            color=SCANNER_COLOUR,
        )
    axes.set_ylabel("T-score" if kind == "t_score" else "BMD (g/cm²)")
    _date_axis(axes, [p.day for p in points])
    axes.grid(True, color="#d0d0d0", linewidth=0.6)
    axes.legend(loc="upper left", bbox_to_anchor=(1.07, 1.0), frameon=False, fontsize=9)
    unit = "" if kind == "t_score" else " g/cm²"
    title = "T-scores per site over time" if kind == "t_score" else "Bone mineral density per site over time"
    description = _describe(points, unit)
    if targets:
        description += " Targets: " + "; ".join(
            f"{t.label} = {t.level}{unit} by {t.end.isoformat()} ({'met' if t.met else 'not met'})"
            for t in targets
        )
    if view.scanner_changes:
        description += " Scanner changed on " + ", ".join(d.isoformat() for d in view.scanner_changes) + "."
    return _svg(figure, title, description, f"chart-{kind.replace('_', '-')}")


def _target(axes: Axes, target: TargetLine) -> None:
    """The target level in the site's colour (thin, long dashes), labelled at its right end."""
    colour = SITE_STYLES.get(target.site, SITE_STYLES["other"])[0]
    axes.plot(
        [_chart_x(target.start), _chart_x(target.end)],
        [float(target.level), float(target.level)],
        color=colour,
        linestyle=(0, (7, 3)),
        linewidth=1.1,
        label=f"{target.label} ({'met' if target.met else 'not met'})",
        gid=f"target-{target.kind}-{target.site}",
    )
    axes.annotate(
        "target",
        xy=(_chart_x(target.end), float(target.level)),
        xytext=(4, 0),
        textcoords="offset points",
        va="center",
        fontsize=8,
        color=colour,
    )


def _date_axis(axes: Axes, days: Sequence[date]) -> None:
    locator = AutoDateLocator(minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    axis = axes.xaxis
    axis.set_major_locator(locator)
    axis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    if days:
        axes.set_xlim(_chart_x(min(days) - timedelta(days=60)), _chart_x(max(days) + timedelta(days=60)))


def timeline_chart(view: PatientView) -> str | None:
    """Covered periods per agent (bars), gaps (yellow), doses (ticks), planned phases (hatched)."""
    rows = view.treatment
    if not rows:
        return None
    figure = _figure(0.9 + 0.45 * len(rows), left=0.33, right=0.97)
    axes = figure.add_subplot()
    all_days: list[date] = [view.as_of]
    for index, row in enumerate(rows):
        row_position = len(rows) - 1 - index
        spans = [
            (_chart_x(bar.start), max(_chart_x(bar.end) - _chart_x(bar.start) + 1, 1)) for bar in row.covered
        ]
        if row.planned:
            axes.broken_barh(
                spans,
                (row_position - 0.3, 0.6),
                facecolors="white",
                edgecolors="#0072B2",
                hatch="//",
                linewidth=1.2,
            )
        else:
            axes.broken_barh(spans, (row_position - 0.3, 0.6), facecolors="#0072B2")
        gaps = [(_chart_x(bar.start), _chart_x(bar.end) - _chart_x(bar.start) + 1) for bar in row.gaps]
        if gaps:
            axes.broken_barh(
                gaps, (row_position - 0.15, 0.3), facecolors="#F0E442", edgecolors="#1a1a1a", linewidth=0.6
            )
        if row.doses:
            axes.plot(
                [_chart_x(d) for d in row.doses],
                [row_position + 0.42] * len(row.doses),
                "|",
                color="#1a1a1a",
                markersize=9,
            )
        all_days.extend(d for bar in row.covered for d in (bar.start, bar.end))
    axes.axvline(_chart_x(view.as_of), color="#D55E00", linewidth=1.2, linestyle="-")
    axes.set_yticks(range(len(rows)), [row.label for row in reversed(rows)])
    axes.set_ylim(-0.7, len(rows) - 0.3)
    _date_axis(axes, all_days)
    axes.grid(True, axis="x", color="#d0d0d0", linewidth=0.6)
    description = " ".join(_row_text(row) for row in rows) + f" Evaluated as of {view.as_of.isoformat()}."
    return _svg(figure, "Treatment timeline", description, "chart-timeline")


def _row_text(row: TreatmentRow) -> str:
    covered = ", ".join(f"{b.start.isoformat()} to {b.end.isoformat()}" for b in row.covered)
    text = f"{row.label}: {'planned' if row.planned else 'covered'} {covered}"
    text += f", {row.note}." if row.note else "."
    if row.gaps:
        text += " Gaps " + ", ".join(f"{b.start.isoformat()} to {b.end.isoformat()}" for b in row.gaps) + "."
    if row.doses:
        text += f" {len(row.doses)} dose dates."
    return text
