"""What the report draws, in one shape for both the html and the png: the run's status.json,
the scheduler's task stream and the recorder's samples, on one time axis (seconds since the
run started). Every input may be empty or partial: a run that failed at the cluster's start
has no task stream, no samples and no steps that ran.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from daskstep.words import plural


@dataclass
class WorkerSeries:
    """One worker's samples, by name: a restarted worker (a new address) continues its line."""

    name: str
    times: list[float] = field(default_factory=list)
    memory: list[float] = field(default_factory=list)  # the process' memory (RSS), bytes
    cpu: list[float] = field(default_factory=list)  # percent of one core
    managed: list[float] = field(default_factory=list)  # what Dask holds in memory, bytes
    spilled: list[float] = field(default_factory=list)  # what it spilled to disk, bytes
    memory_limit: float | None = None
    nthreads: int | None = None

    def add(self, t: float, memory: float, cpu: float, managed: float, spilled: float) -> None:
        for column, value in zip(
            (self.times, self.memory, self.cpu, self.managed, self.spilled),
            (t, memory, cpu, managed, spilled),
            strict=True,
        ):
            column.append(value)

    def thin(self) -> None:
        for column in (self.times, self.memory, self.cpu, self.managed, self.spilled):
            del column[1::2]


MAX_BARS = 100_000  # the scheduler's own task-stream length (distributed's default)
# one colour per worker (matplotlib's tab10, bokeh's Category10): memory and CPU lines
WORKER_COLORS = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
]  # fmt: skip
STEP_COLORS = {
    "finished": "#4daf4a",
    "failed": "#e41a1c",
    "cancelled": "#ff9f1c",
    "running": "#377eb8",
}
OTHER_STEP_COLOR = "#bbbbbb"
EVENT_COLOR = "#c2185b"
ERROR_COLOR = "black"  # an erred task, as on Dask's dashboard
ACTION_COLORS = {"transfer": "red", "disk-write": "orange", "disk-read": "orange",
                 "deserialize": "gray"}  # fmt: skip
ACTION_ALPHA = {"compute": 1.0}  # the others are drawn faint, as on Dask's dashboard


@dataclass
class TaskBars:
    """One bar per start/stop of a task (compute, transfer, disk), on its worker thread's row."""

    rows: list[str] = field(default_factory=list)  # display order, top first
    row: list[str] = field(default_factory=list)
    start: list[float] = field(default_factory=list)
    stop: list[float] = field(default_factory=list)
    color: list[str] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    name: list[str] = field(default_factory=list)  # "sum", "transfer-sum"
    key: list[str] = field(default_factory=list)
    worker: list[str] = field(default_factory=list)


@dataclass
class StepBar:
    name: str
    status: str
    exit_code: int | None
    start: float | None
    stop: float | None
    reason: str = ""
    peak_rss: int | None = None  # the step's own process tree, bytes (the entrypoint's)


@dataclass
class Event:
    t: float | None
    component: str
    what: str
    why: str
    when: str = ""  # as status.json says it (UTC), for finding it in the logs


@dataclass
class PrefixRow:
    """Where the time went, per task prefix."""

    prefix: str
    color: str
    count: int = 0
    errors: int = 0
    compute: float = 0.0  # seconds computing, summed over tasks
    transfer: float = 0.0  # seconds fetching the tasks' inputs

    @property
    def mean(self) -> float:
        return self.compute / self.count if self.count else 0.0


@dataclass
class ReportData:
    t0: float  # the run's start, seconds since the epoch
    end: float  # the last thing seen, seconds since t0
    summary: dict[str, Any]
    tasks: TaskBars
    series: list[WorkerSeries]  # times already in seconds since t0
    worker_colors: dict[str, str]
    steps: list[StepBar]
    events: list[Event]
    prefixes: list[PrefixRow]


def memory_scale(series: list[WorkerSeries]) -> tuple[float, list[float]]:
    """The memory axis' top and the limits drawn on it: a limit far above what the workers used
    would flatten their lines, so only the limits near them are drawn (the rest are named)."""
    used = [v for s in series for v in (*s.memory, *s.managed) if math.isfinite(v)]
    highest = max(used, default=0.0)
    limits = sorted({s.memory_limit for s in series if s.memory_limit})
    near = [limit for limit in limits if limit <= highest * 3]
    return max([highest, *near]) * 1.08 or 1.0, near


def epoch(text: Any) -> float | None:
    """status.json's ISO times (`2026-01-02T03:04:05.678Z`) as seconds since the epoch."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def natural(text: str) -> list[Any]:
    """worker-2 before worker-10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def key_text(key: Any) -> str:
    if isinstance(key, list):  # a tuple key that travelled as a list
        key = tuple(key)
    return str(key)[:120]


def prefix_of(key: Any) -> str:
    from dask.utils import key_split

    if isinstance(key, list):
        key = tuple(key)
    try:
        return str(key_split(key))
    except Exception:
        return key_text(key)


def build(
    status: dict[str, Any],
    task_stream: list[dict[str, Any]],
    names: dict[str, str],
    series: list[WorkerSeries],
) -> ReportData:
    messages = [m for m in list(task_stream)[-MAX_BARS:] if isinstance(m, dict)]
    starts = [
        float(s["start"])
        for m in messages
        for s in _startstops(m)
        if isinstance(s, dict) and _finite(s.get("start"))
    ]
    sampled = [t for s in series for t in s.times]
    t0 = epoch(status.get("started_at"))
    if t0 is None:
        t0 = min(starts + sampled, default=0.0)
    tasks, prefixes = _tasks(messages, names, t0)
    shifted = [_shift(s, t0) for s in series]
    shifted.sort(key=lambda s: natural(s.name))
    colors = {s.name: WORKER_COLORS[i % len(WORKER_COLORS)] for i, s in enumerate(shifted)}
    steps = [_step(entry, t0) for entry in status.get("steps") or [] if isinstance(entry, dict)]
    events = [
        Event(
            _since(e.get("time"), t0),
            str(e.get("component", "")),
            str(e.get("what", "")),
            str(e.get("why", "")),
            str(e.get("time", "")),
        )
        for e in status.get("events") or []
        if isinstance(e, dict)
    ]
    ends = [*tasks.stop, *(t for s in shifted for t in s.times[-1:])]
    ends += [t for s in steps for t in (s.start, s.stop) if t is not None]
    ends += [e.t for e in events if e.t is not None]
    finished = _since(status.get("finished_at"), t0)
    duration = status.get("duration_seconds")
    ends += [finished] if finished is not None else []
    ends += [float(duration)] if _finite(duration) else []
    end = max(ends, default=1.0)
    cluster = status.get("cluster") if isinstance(status.get("cluster"), dict) else {}
    summary = {
        "workflow": status.get("workflow") or "",
        "status": status.get("status") or "unknown",
        "exit_code": status.get("exit_code"),
        "started_at": status.get("started_at") or "",
        "duration": float(duration) if _finite(duration) else end,
        "backend": cluster.get("backend") or "",
        "workers": f"{cluster.get('workers_ready', '?')} of "
        f"{plural(cluster.get('workers_requested', '?'), 'worker')}",
        "message": status.get("message") or "",
        "reason": status.get("reason") or "",
        "tasks": sum(p.count for p in prefixes),
    }
    return ReportData(t0, max(end, 1e-3), summary, tasks, shifted, colors, steps, events, prefixes)


def _startstops(message: dict[str, Any]) -> list[Any]:
    startstops = message.get("startstops")
    return list(startstops) if isinstance(startstops, list | tuple) else []


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _since(text: Any, t0: float) -> float | None:
    t = epoch(text)
    return None if t is None else t - t0


def _shift(series: WorkerSeries, t0: float) -> WorkerSeries:
    return WorkerSeries(
        series.name,
        [t - t0 for t in series.times],
        series.memory,
        series.cpu,
        series.managed,
        series.spilled,
        series.memory_limit,
        series.nthreads,
    )


def _step(entry: dict[str, Any], t0: float) -> StepBar:
    code = entry.get("exit_code")
    return StepBar(
        name=str(entry.get("name", "")),
        status=str(entry.get("status", "")),
        exit_code=code if isinstance(code, int) else None,
        start=_since(entry.get("started_at"), t0),
        stop=_since(entry.get("finished_at"), t0),
        reason=str(entry.get("reason") or entry.get("message") or ""),
        peak_rss=rss if isinstance(rss := entry.get("peak_rss_bytes"), int) else None,
    )


@functools.cache
def color_of(prefix: str) -> str:
    """A task prefix's colour as the dashboard's task stream gives it (distributed.utils'
    color_of over viridis(18)), without importing distributed (0.5 s of every report)."""
    from bokeh.palettes import viridis

    palette = viridis(18)
    digest = hashlib.md5(prefix.encode(), usedforsecurity=False).hexdigest()
    return palette[int(digest[:8], 16) % len(palette)]


def _tasks(
    messages: list[dict[str, Any]], names: dict[str, str], t0: float
) -> tuple[TaskBars, list[PrefixRow]]:
    bars = TaskBars()
    threads: dict[tuple[str, Any], str] = {}  # (worker name, thread id) -> row label
    per_worker: dict[str, int] = {}
    prefixes: dict[str, PrefixRow] = {}
    for message in messages:
        address = str(message.get("worker", "?"))
        worker = names.get(address) or address.split("://")[-1]
        thread = message.get("thread")
        if (worker, thread) not in threads:
            per_worker[worker] = per_worker.get(worker, 0) + 1
            threads[worker, thread] = f"{worker} · thread {per_worker[worker]}"
        row = threads[worker, thread]
        key = message.get("key")
        prefix = prefix_of(key)
        erred = message.get("status", "OK") != "OK"
        stats = prefixes.setdefault(prefix, PrefixRow(prefix, color_of(prefix)))
        stats.count += 1
        stats.errors += erred
        for startstop in _startstops(message):
            if not isinstance(startstop, dict):
                continue
            start, stop = startstop.get("start"), startstop.get("stop")
            if not (_finite(start) and _finite(stop)):
                continue
            action = str(startstop.get("action", "compute"))
            if action == "compute":
                stats.compute += stop - start
                color = ERROR_COLOR if erred else stats.color
                name = prefix
            else:
                stats.transfer += (stop - start) if action == "transfer" else 0.0
                color = ACTION_COLORS.get(action, "gray")
                name = f"{action}-{prefix}"
            bars.row.append(row)
            bars.start.append(start - t0)
            bars.stop.append(stop - t0)
            bars.color.append(color)
            bars.alpha.append(ACTION_ALPHA.get(action, 0.4))
            bars.name.append(name)
            bars.key.append(key_text(key))
            bars.worker.append(worker)
    bars.rows = sorted(threads.values(), key=natural)
    ordered = sorted(prefixes.values(), key=lambda p: -p.compute)
    return bars, ordered
