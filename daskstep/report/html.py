"""report.html: bokeh plots on one shared time axis (pan or zoom one, all follow), as
distributed's performance_report, with BokehJS inline so that the file opens with no server and
no network. The tables are plain HTML around the plots, so only BokehJS's core is embedded.
"""

from __future__ import annotations

from typing import Any

from daskstep.report.data import (
    EVENT_COLOR,
    OTHER_STEP_COLOR,
    STEP_COLORS,
    ReportData,
    memory_scale,
)
from daskstep.report.tables import header, tables

WIDTH = 1300
LINE_PLOT_HEIGHT = 240  # memory and CPU, px
TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: sans-serif; margin: 16px; color: #222; }
h1 { font-size: 20px; margin: 0 0 6px 0; } h2 { font-size: 16px; margin: 18px 0 6px 0; }
table { border-collapse: collapse; font-size: 13px; margin-bottom: 8px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.summary td { border: none; padding: 1px 12px 1px 0; }
.failed { color: #c00; font-weight: bold; } .note { color: #666; font-size: 13px; }
</style>
{{ bokeh_css }}
{{ bokeh_js }}
</head>
<body>
{{ header }}
{{ plot_div }}
{{ tables }}
{{ plot_script }}
</body>
</html>
"""


def render_html(data: ReportData) -> str:
    from bokeh.embed import file_html
    from bokeh.layouts import column
    from bokeh.models import Range1d
    from bokeh.resources import INLINE
    from jinja2 import Template

    pad = data.end * 0.02 + 0.5
    x_range = Range1d(-pad, data.end + pad, bounds=(-pad * 4, data.end + pad * 4))
    plots = [
        _task_stream(data, x_range),
        _memory(data, x_range),
        _cpu(data, x_range),
        _steps(data, x_range),
        _events(data, x_range),
    ]
    for plot in plots:
        plot.toolbar.logo = None  # a link to bokeh.org: nothing in this file reaches out
        _mark_events(plot, data)
    plots[-1].xaxis.axis_label = "seconds since the run started"
    layout = column(*plots, sizing_mode="stretch_width")
    return file_html(
        layout,
        INLINE,
        title=f"daskstep report: {data.summary['workflow']}",
        template=Template(TEMPLATE),
        template_variables={"header": header(data), "tables": tables(data)},
    )


def _figure(title: str, x_range: Any, height: int, **kwargs: Any) -> Any:
    from bokeh.plotting import figure

    return figure(
        title=title,
        x_range=x_range,
        height=height,
        width=WIDTH,
        sizing_mode="stretch_width",
        tools="xpan,xwheel_zoom,box_zoom,reset,save",
        active_scroll="xwheel_zoom",
        **kwargs,
    )


def _empty(plot: Any, text: str) -> None:
    from bokeh.models import Label

    plot.add_layout(
        Label(
            x=10,
            y=10,
            x_units="screen",
            y_units="screen",
            text=text,
            text_color="#888",
            text_font_size="14px",
        )
    )


def _task_stream(data: ReportData, x_range: Any) -> Any:
    import numpy as np
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d

    bars = data.tasks
    if not bars.rows:
        plot = _figure("Task stream", x_range, 160, y_range=Range1d(0, 1))
        plot.yaxis.visible = False
        _empty(plot, "No task stream was recorded: no step computed on the cluster.")
        return plot
    height = min(900, max(180, 22 * len(bars.rows) + 70))
    plot = _figure(
        "Task stream (a row per worker thread)",
        x_range,
        height,
        y_range=FactorRange(*reversed(bars.rows)),
    )
    start, stop = np.asarray(bars.start), np.asarray(bars.stop)
    source = ColumnDataSource(
        {
            "row": bars.row,
            "start": start,
            "stop": stop,
            "duration": stop - start,
            "color": bars.color,
            "alpha": np.asarray(bars.alpha),
            "name": bars.name,
            "key": bars.key,
            "worker": bars.worker,
        }
    )
    plot.hbar(
        y="row",
        left="start",
        right="stop",
        height=0.8,
        fill_color="color",
        fill_alpha="alpha",
        line_color=None,
        source=source,
    )
    plot.add_tools(
        HoverTool(
            tooltips=[
                ("task", "@name"),
                ("key", "@key"),
                ("worker", "@worker"),
                ("seconds", "@duration{0.000}"),
            ]
        )
    )
    return plot


def _lines(data: ReportData, x_range: Any, title: str, column: str, label: str, top: float) -> Any:
    """A line per worker; the y axis from 0 to at least `top`."""
    import numpy as np
    from bokeh.models import ColumnDataSource, HoverTool, Range1d

    highest = max(
        (
            float(np.nanmax(v))
            for s in data.series
            if np.isfinite(v := np.asarray(getattr(s, column), dtype=float)).any()
        ),
        default=0.0,
    )
    plot = _figure(
        title, x_range, LINE_PLOT_HEIGHT, y_range=Range1d(0, max(top, highest * 1.08) or 1.0)
    )
    plot.yaxis.axis_label = label
    drawn = []
    for series in data.series:
        values = np.asarray(getattr(series, column), dtype=float)
        if not np.isfinite(values).any():
            continue
        source = ColumnDataSource(
            {"t": np.asarray(series.times), "v": values, "worker": [series.name] * len(values)}
        )
        color = data.worker_colors[series.name]
        drawn.append(
            plot.line("t", "v", source=source, line_width=2, color=color, legend_label=series.name)
        )
        if column == "memory" and np.isfinite(series.managed).any():
            managed = ColumnDataSource(
                {
                    "t": np.asarray(series.times),
                    "v": np.asarray(series.managed, dtype=float),
                    "worker": [series.name] * len(values),
                }
            )
            plot.line(
                "t",
                "v",
                source=managed,
                line_width=1,
                line_dash="dashed",
                color=color,
                alpha=0.7,
                legend_label=f"{series.name} (managed)",
            )
    if not drawn:
        _empty(plot, "No samples of the workers were recorded.")
        return plot
    fmt = "{0.0 b}" if column == "memory" else "{0}%"
    plot.add_tools(
        HoverTool(
            renderers=drawn,
            tooltips=[("worker", "@worker"), ("seconds", "@t{0.0}"), (label, f"@v{fmt}")],
        )
    )
    plot.legend.location = "top_left"
    plot.legend.background_fill_alpha = 0.6
    plot.legend.click_policy = "hide"
    plot.legend.label_text_font_size = "11px"
    return plot


def _memory(data: ReportData, x_range: Any) -> Any:
    from bokeh.models import NumeralTickFormatter, Span
    from dask.utils import format_bytes

    top, near = memory_scale(data.series)
    limits = sorted({s.memory_limit for s in data.series if s.memory_limit})
    limits = "limit " + ", ".join(format_bytes(v) for v in limits) if limits else "no limit"

    plot = _lines(
        data,
        x_range,
        f"Worker memory (solid: process, dashed: managed by Dask, dotted: the limit; {limits})",
        "memory",
        "memory",
        top,
    )
    plot.yaxis.formatter = NumeralTickFormatter(format="0.0 b")
    for limit in near:
        plot.add_layout(
            Span(
                location=limit,
                dimension="width",
                line_color="#555",
                line_dash="dotted",
                line_width=1,
            )
        )
    return plot


def _cpu(data: ReportData, x_range: Any) -> Any:
    return _lines(data, x_range, "Worker CPU (100% = one core busy)", "cpu", "CPU", 100.0)


def _steps(data: ReportData, x_range: Any) -> Any:
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d

    ran = [s for s in data.steps if s.start is not None]
    if not ran:
        plot = _figure("Steps", x_range, 120, y_range=Range1d(0, 1))
        plot.yaxis.visible = False
        _empty(plot, "No step ran.")
        return plot
    names = list(dict.fromkeys(s.name for s in data.steps))
    plot = _figure(
        "Steps", x_range, max(120, 30 * len(names) + 60), y_range=FactorRange(*reversed(names))
    )
    source = ColumnDataSource(
        {
            "name": [s.name for s in ran],
            "start": [s.start for s in ran],
            "stop": [s.stop if s.stop is not None else data.end for s in ran],
            "color": [STEP_COLORS.get(s.status, OTHER_STEP_COLOR) for s in ran],
            "status": [s.status for s in ran],
            "label": [f"{s.status}, exit {s.exit_code}" for s in ran],
            "reason": [s.reason for s in ran],
        }
    )
    plot.hbar(
        y="name",
        left="start",
        right="stop",
        height=0.6,
        fill_color="color",
        line_color=None,
        source=source,
    )
    plot.text(
        x="start",
        y="name",
        text="label",
        source=source,
        x_offset=4,
        text_font_size="11px",
        text_baseline="middle",
    )
    plot.add_tools(
        HoverTool(
            tooltips=[
                ("step", "@name"),
                ("status", "@label"),
                ("reason", "@reason"),
                ("from", "@start{0.0} s"),
                ("to", "@stop{0.0} s"),
            ]
        )
    )
    return plot


def _events(data: ReportData, x_range: Any) -> Any:
    from bokeh.models import ColumnDataSource, FactorRange, HoverTool, Range1d

    timed = [e for e in data.events if e.t is not None]
    if not timed:
        plot = _figure("Events", x_range, 110, y_range=Range1d(0, 1))
        plot.yaxis.visible = False
        _empty(plot, "No events: no worker was lost, killed or paused.")
        return plot
    components = sorted({e.component for e in timed})
    plot = _figure(
        "Events (also the dashed lines above)",
        x_range,
        max(110, 26 * len(components) + 70),
        y_range=FactorRange(*reversed(components)),
    )
    source = ColumnDataSource(
        {
            "t": [e.t for e in timed],
            "component": [e.component for e in timed],
            "what": [e.what for e in timed],
            "why": [e.why for e in timed],
        }
    )
    marks = plot.scatter(
        "t", "component", source=source, marker="inverted_triangle", size=14, color=EVENT_COLOR
    )
    plot.add_tools(
        HoverTool(
            renderers=[marks],
            tooltips=[
                ("at", "@t{0.0} s"),
                ("component", "@component"),
                ("what", "@what"),
                ("why", "@why"),
            ],
        )
    )
    return plot


def _mark_events(plot: Any, data: ReportData) -> None:
    from bokeh.models import Span

    for event in data.events:
        if event.t is not None:
            plot.add_layout(
                Span(
                    location=event.t,
                    dimension="height",
                    line_color=EVENT_COLOR,
                    line_dash="dashed",
                    line_width=1,
                    line_alpha=0.7,
                )
            )
