"""report.png: one summary figure (task stream, worker memory, steps, events as dashed lines),
for a glance, a ticket or a chat. Drawn with matplotlib's Agg canvas directly: no pyplot, no
global backend, nothing for a display to open.
"""

from __future__ import annotations

import io
import math

from daskstep.report.data import (
    EVENT_COLOR,
    OTHER_STEP_COLOR,
    STEP_COLORS,
    ReportData,
    memory_scale,
)
from daskstep.words import plural

SIZE = (12.0, 9.0)  # inches, at DPI
DPI = 100
MAX_EVENT_LABELS = 12


def render_png(data: ReportData) -> bytes:
    import numpy as np
    from dask.utils import format_bytes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.colors import to_rgba_array
    from matplotlib.figure import Figure

    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    tasks_ax, memory_ax, steps_ax = figure.subplots(
        3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2, 1.2]}
    )
    s = data.summary
    figure.suptitle(
        f"{s['workflow'] or 'daskstep run'}: {s['status']}, exit code {s['exit_code']}, "
        f"{s['duration']:.1f} s, {plural(s['tasks'], 'task')} (started {s['started_at']} UTC)",
        fontsize=11,
    )

    bars = data.tasks
    tasks_ax.set_title("Task stream (a row per worker thread)", fontsize=10, loc="left")
    if bars.rows:
        index = {row: len(bars.rows) - 1 - i for i, row in enumerate(bars.rows)}
        y = np.array([index[r] for r in bars.row], dtype=float)
        x0, x1 = np.asarray(bars.start), np.asarray(bars.stop)
        x1 = np.maximum(x1, x0 + data.end / 2000)  # a 50 µs task stays visible
        verts = np.stack(
            [
                np.column_stack([x0, y - 0.4]),
                np.column_stack([x0, y + 0.4]),
                np.column_stack([x1, y + 0.4]),
                np.column_stack([x1, y - 0.4]),
            ],
            axis=1,
        )
        colors = to_rgba_array(bars.color)
        colors[:, 3] = bars.alpha
        tasks_ax.add_collection(PolyCollection(verts, facecolors=colors, linewidths=0))
        tasks_ax.set_ylim(-0.6, len(bars.rows) - 0.4)
        step = max(1, len(bars.rows) // 16)  # at most ~16 labels
        ticks = list(range(0, len(bars.rows), step))
        tasks_ax.set_yticks(ticks, [bars.rows[len(bars.rows) - 1 - t] for t in ticks], fontsize=8)
    else:
        _empty(tasks_ax, "no task stream was recorded")

    memory_ax.set_title("Worker memory (process)", fontsize=10, loc="left")
    drawn = False
    for series in data.series:
        memory = np.asarray(series.memory, dtype=float)
        if np.isfinite(memory).any():
            memory_ax.plot(
                series.times,
                memory / 2**30,
                color=data.worker_colors[series.name],
                linewidth=1.5,
                label=series.name,
            )
            drawn = True
    top, near = memory_scale(data.series)
    if drawn:
        for limit in near:
            memory_ax.axhline(limit / 2**30, color="#555", linestyle=":", linewidth=1)
        memory_ax.set_ylabel("GiB")
        memory_ax.set_ylim(0, top / 2**30)
        limits = sorted({s.memory_limit for s in data.series if s.memory_limit})
        if limits:
            named = ", ".join(format_bytes(v) for v in limits)
            memory_ax.set_title(f"Worker memory (process; limit {named})", fontsize=10, loc="left")
        if len(data.series) <= 12:
            memory_ax.legend(fontsize=8, loc="upper left", ncol=min(6, len(data.series)))
    else:
        _empty(memory_ax, "no samples of the workers were recorded")

    steps_ax.set_title("Steps", fontsize=10, loc="left")
    ran = [st for st in data.steps if st.start is not None]
    if ran:
        names = list(dict.fromkeys(st.name for st in data.steps))
        for st in ran:
            row = len(names) - 1 - names.index(st.name)
            stop = st.stop if st.stop is not None else data.end
            steps_ax.barh(
                row,
                stop - st.start,
                left=st.start,
                height=0.6,
                color=STEP_COLORS.get(st.status, OTHER_STEP_COLOR),
            )
            steps_ax.text(
                max(st.start, 0.0),
                row,
                f" {st.name}: {st.status}, exit {st.exit_code}",
                va="center",
                fontsize=8,
                clip_on=True,
                in_layout=False,
            )
        steps_ax.set_yticks([])
        steps_ax.set_ylim(-0.6, len(names) - 0.4)
    else:
        _empty(steps_ax, "no step ran")
    steps_ax.set_xlabel("seconds since the run started")

    timed = [e for e in data.events if e.t is not None and math.isfinite(e.t)]
    for ax in (tasks_ax, memory_ax, steps_ax):
        for event in timed:
            ax.axvline(event.t, color=EVENT_COLOR, linestyle="--", linewidth=1, alpha=0.8)
    for event in timed[:MAX_EVENT_LABELS]:
        tasks_ax.annotate(
            f"{event.component}: {event.what}",
            (event.t, 1.0),
            xycoords=("data", "axes fraction"),
            rotation=90,
            va="top",
            ha="right",
            fontsize=7,
            color=EVENT_COLOR,
            annotation_clip=True,
            in_layout=False,
        )
    pad = data.end * 0.02 + 0.5
    steps_ax.set_xlim(-pad, data.end + pad)

    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI)
    return out.getvalue()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#888")
    ax.set_yticks([])
