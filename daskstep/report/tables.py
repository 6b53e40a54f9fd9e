"""report.html's words: the run's summary, and the steps, events and task prefixes as plain
HTML tables (every value escaped: reasons and keys come from the user's code)."""

from __future__ import annotations

import html
import math
from typing import Any

from daskstep.report.data import ReportData


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _seconds(value: float | None) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.2f}"


def header(data: ReportData) -> str:
    s = data.summary
    failed = s["status"] not in ("finished", "running")
    rows = [
        ("workflow", _e(s["workflow"])),
        (
            "status",
            f"<span class={'failed' if failed else 'ok'}>{_e(s['status'])}</span>"
            f", exit code {_e(s['exit_code'])}",
        ),
        ("started", f"{_e(s['started_at'])} (UTC); {s['duration']:.1f} s"),
        ("cluster", f"{_e(s['backend'] or 'unknown')} backend, {_e(s['workers'])} ready"),
        ("tasks", f"{s['tasks']} in the scheduler's task stream"),
    ]
    if s["message"] or s["reason"]:
        rows.append(("why", _e(" ".join(p for p in (s["reason"], s["message"]) if p))))
    cells = "".join(f"<tr><td><b>{k}</b></td><td>{v}</td></tr>" for k, v in rows)
    return f"<h1>daskstep run report</h1><table class=summary>{cells}</table>"


def _table(headers: list[str], rows: list[list[str]], numeric: set[int]) -> str:
    head = "".join(f"<th>{h}</th>" for h in headers)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td class=n>{c}</td>" if i in numeric else f"<td>{c}</td>" for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def tables(data: ReportData) -> str:
    from dask.utils import format_bytes

    parts = ["<h2>Steps</h2>"]
    if data.steps:
        rows = [
            [
                _e(s.name),
                _e(s.status),
                _e(s.exit_code),
                _seconds(s.start),
                _seconds(s.stop - s.start if s.start is not None and s.stop is not None else None),
                format_bytes(s.peak_rss) if s.peak_rss is not None else "",
                _e(s.reason),
            ]
            for s in data.steps
        ]
        headers = ["step", "status", "exit code", "started (s)", "seconds", "peak RSS", "reason"]
        parts.append(_table(headers, rows, {2, 3, 4, 5}))
    else:
        parts.append("<p class=note>No steps.</p>")
    parts.append("<h2>Events</h2>")
    if data.events:
        rows = [
            [_seconds(e.t), _e(e.when), _e(e.component), _e(e.what), _e(e.why)] for e in data.events
        ]
        parts.append(_table(["at (s)", "time (UTC)", "component", "what", "why"], rows, {0}))
    else:
        parts.append("<p class=note>No events: no worker was lost, killed or paused.</p>")
    parts.append("<h2>Where the time went, per task prefix</h2>")
    if data.prefixes:
        rows = [
            [
                _e(p.prefix),
                str(p.count),
                str(p.errors),
                f"{p.compute:.3f}",
                f"{p.mean:.4f}",
                f"{p.transfer:.3f}",
            ]
            for p in data.prefixes
        ]
        parts.append(
            _table(
                ["task prefix", "tasks", "erred", "compute (s)", "mean (s)", "transfer (s)"],
                rows,
                {1, 2, 3, 4, 5},
            )
        )
    else:
        parts.append("<p class=note>No tasks were recorded.</p>")
    return "\n".join(parts)
