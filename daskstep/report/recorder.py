"""The post-mortem report's recorder: the run's `report.html` (interactive, bokeh, readable
from the file with no server) and `report.png` (one matplotlib figure), written after every run
so that where the time and memory went outlives the cluster.

Only the standard library is imported here: `daskstep run` holds a `RunRecorder` for the whole
run, and bokeh and matplotlib are imported only once the report is written. That takes about
3 s, most of it imports, which every run's prompt waited for: `daskstep run` now hands what the
report needs to a process of its own (`python -m daskstep.report FOLDER`), which outlives the
prompt, and leaves a page in its place that reloads itself until the report is there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daskstep.extras import missing
from daskstep.record import REPORT_HTML, REPORT_PNG
from daskstep.report.data import WorkerSeries

MAX_POINTS = 3600  # samples kept per worker; past it, every other one goes (a day stays small)
DATA = "report-data.json"  # what the report is drawn from, until it is drawn
NICE = 10  # the drawing process's niceness
PENDING = (
    '<!DOCTYPE html><title>daskstep report</title><meta http-equiv="refresh" content="1">'
    "<p>The report is being written; this page reloads until it is there.</p>\n"
)


def _number(value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _spilled(metrics: dict[str, Any]) -> float:
    spilled = metrics.get("spilled_bytes", metrics.get("spilled_nbytes"))
    if isinstance(spilled, dict):  # {"memory": ..., "disk": ...}: what went to disk
        return _number(spilled.get("disk"))
    return _number(spilled)


class RunRecorder:
    """Samples the workers' memory and CPU from the scheduler's identity while the run lives."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.series: dict[str, WorkerSeries] = {}
        self.names: dict[str, str] = {}  # worker address -> name, every address ever seen
        self._lock = threading.Lock()  # sampled by the watcher thread, read by the report
        self._stride = 1  # keep one sample in `_stride` once thinned
        self._count = 0

    def sample(self, identity: dict) -> None:
        """One look at the workers (about once a second); an identity without workers (a
        backend that cannot ask the scheduler) records nothing."""
        workers = identity.get("workers") if isinstance(identity, dict) else None
        if not isinstance(workers, dict):
            return
        t = self.clock()
        with self._lock:
            index, self._count = self._count, self._count + 1
            for address, worker in workers.items():
                name = str(worker.get("name", address)) if isinstance(worker, dict) else address
                self.names[str(address)] = name
            if index % self._stride:  # thinned: the kept ones are the multiples of the stride
                return
            present: set[str] = set()
            for address, worker in workers.items():
                if not isinstance(worker, dict):
                    continue
                name = self.names[str(address)]
                present.add(name)
                metrics = worker.get("metrics")
                metrics = metrics if isinstance(metrics, dict) else {}
                series = self.series.setdefault(name, WorkerSeries(name))
                limit = _number(worker.get("memory_limit"))
                series.memory_limit = limit if limit > 0 else None  # 0: no limit; nan: unknown
                series.nthreads = worker.get("nthreads", series.nthreads)
                series.add(
                    t,
                    _number(metrics.get("memory")),
                    _number(metrics.get("cpu")),
                    _number(metrics.get("managed_bytes", metrics.get("managed_in_memory"))),
                    _spilled(metrics),
                )
            for name, series in self.series.items():  # gone: a gap in its line, not a slope
                if name not in present and series.memory and not math.isnan(series.memory[-1]):
                    series.add(t, math.nan, math.nan, math.nan, math.nan)
            if any(len(s.times) > MAX_POINTS for s in self.series.values()):
                for series in self.series.values():
                    series.thin()
                self._stride *= 2

    def snapshot(self) -> tuple[dict[str, str], list[WorkerSeries]]:
        """A copy for the report, taken under the lock (the watcher may still be sampling)."""
        with self._lock:
            copies = [
                WorkerSeries(
                    s.name,
                    list(s.times),
                    list(s.memory),
                    list(s.cpu),
                    list(s.managed),
                    list(s.spilled),
                    s.memory_limit,
                    s.nthreads,
                )
                for s in self.series.values()
            ]
            return dict(self.names), copies


class Recorded:
    """What a RunRecorder saw, read back from the report's data file."""

    def __init__(self, names: dict[str, str], series: list[WorkerSeries]) -> None:
        self.names, self.series = names, series

    def snapshot(self) -> tuple[dict[str, str], list[WorkerSeries]]:
        return self.names, self.series


def write_report_later(
    state_dir: Path, status: dict, task_stream: list[dict], recorder: RunRecorder | None
) -> Path:
    """The report, drawn by a process of its own that outlives the prompt; its messages go to
    `report.log` beside it. The page that stands in for it meanwhile is returned."""
    from daskstep.secret_env import child_env

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    names, series = recorder.snapshot() if recorder is not None else ({}, [])
    data = {
        "status": status,
        "task_stream": task_stream,
        "names": names,
        "series": [dataclasses.asdict(s) for s in series],
    }
    _atomic_write(state_dir / DATA, json.dumps(data, default=str).encode())
    html_path = state_dir / REPORT_HTML
    _atomic_write(html_path, PENDING.encode())
    with open(state_dir / "report.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "daskstep.report", str(state_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=child_env(),
            start_new_session=True,  # a Ctrl-C at the prompt is not for it
        )
    return html_path


def main(argv: list[str]) -> int:
    """`python -m daskstep.report FOLDER`: draw the report from FOLDER's data file, at a low
    priority: its 2-3 s of CPU (bokeh and matplotlib) must not slow what the user does next
    (the next run, on a machine of 2 cores)."""
    with contextlib.suppress(OSError):
        os.nice(NICE)
    folder = Path(argv[0])
    data = json.loads((folder / DATA).read_text())
    series = [WorkerSeries(**s) for s in data.get("series", [])]
    recorded = Recorded(data.get("names", {}), series)
    try:
        write_report(folder, data.get("status") or {}, data.get("task_stream") or [], recorded)
    except Exception as e:
        print(f"warning: the report could not be written: {type(e).__name__}: {e}")
        return 1
    (folder / DATA).unlink(missing_ok=True)
    return 0


def write_report(
    state_dir: Path,
    status: dict,
    task_stream: list[dict],
    recorder: RunRecorder | Recorded | None,
) -> tuple[Path, Path]:
    """Writes state_dir/report.html and state_dir/report.png; returns their paths.

    Both files are attempted even when one fails (a broken figure must not cost the other);
    then the first failure is raised, for the caller to turn into one warning line."""
    from daskstep.report.data import build

    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    html_path, png_path = state_dir / REPORT_HTML, state_dir / REPORT_PNG
    try:
        names, series = recorder.snapshot() if recorder is not None else ({}, [])
        data = build(status or {}, task_stream or [], names, series)
    except Exception as exc:
        for path in (html_path, png_path):
            with contextlib.suppress(Exception):
                _write_fallback(path, exc)  # not last run's report, as if it were this one's
        raise
    failures: list[BaseException] = []
    for path, writer in ((html_path, _write_html), (png_path, _write_png)):
        if path == png_path and missing("report"):  # the figure is an extra's: a note
            print("note: no report.png without matplotlib; pip install 'daskstep[report]'")
            path.unlink(missing_ok=True)
            continue
        try:
            with warnings.catch_warnings():  # a figure's layout advice is no news for the run
                warnings.simplefilter("ignore")
                writer(data, path)
        except Exception as exc:
            failures.append(exc)
            with contextlib.suppress(Exception):
                _write_fallback(path, exc)
    if failures:
        raise failures[0]
    return html_path, png_path


def _write_html(data: Any, path: Path) -> None:
    from daskstep.report.html import render_html

    _atomic_write(path, render_html(data).encode())


def _write_png(data: Any, path: Path) -> None:
    from daskstep.report.png import render_png

    _atomic_write(path, render_png(data))


def _write_fallback(path: Path, exc: BaseException) -> None:
    """A file that says why, where the report would be: better than last run's report."""
    if path.suffix == ".html":
        import html

        text = "<!DOCTYPE html><title>daskstep report</title><p>The report could not be drawn: "
        text += f"{html.escape(type(exc).__name__)}: {html.escape(str(exc))}</p>\n"
        _atomic_write(path, text.encode())
    else:
        path.unlink(missing_ok=True)


def _atomic_write(path: Path, content: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    temporary.replace(path)
