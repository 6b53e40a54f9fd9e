"""The post-mortem report: report.html and report.png from status.json, the scheduler's task
stream and the recorder's samples; from synthetic runs, empty and failed ones, and a real
LocalCluster."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daskstep.report import DATA, MAX_POINTS, PENDING, RunRecorder, write_report, write_report_later
from daskstep.report import png as report_png
from daskstep.report.data import ERROR_COLOR, build
from entrypoint.reporter import iso

T0 = 1_795_886_400.0


def identity(memory: dict[str, float], limit: float = 2**30) -> dict:
    """The scheduler's identity() for workers named worker-N at tcp://127.0.0.1:400N."""
    return {
        "workers": {
            f"tcp://127.0.0.1:{4000 + int(name.split('-')[1])}": {
                "name": name,
                "memory_limit": limit,
                "nthreads": 2,
                "metrics": {
                    "memory": used,
                    "cpu": 80.0,
                    "managed_bytes": used / 2,
                    "spilled_bytes": {"memory": 0, "disk": 1024},
                },
            }
            for name, used in memory.items()
        }
    }


def synthetic_stream(t0: float, tasks: int) -> list[dict]:
    """TaskStreamPlugin messages: two workers, two threads each, tuple keys, a few transfers
    and erred tasks."""
    rnd = random.Random(1)
    stream = []
    for n in range(tasks):
        worker, thread = n % 2, n % 4 // 2
        t = t0 + 2 + n // 4 * 0.03
        prefix = ("inc", "sum", "from_sequence")[n % 3]
        startstops = [{"action": "compute", "start": t, "stop": t + rnd.uniform(0.005, 0.025)}]
        if n % 7 == 0:
            startstops.insert(0, {"action": "transfer", "start": t - 0.004, "stop": t})
        stream.append(
            {
                "worker": f"tcp://127.0.0.1:{4000 + worker}",
                "thread": 140_000 + thread,
                "key": (f"{prefix}-a31f{n // 97}", n),
                "status": "error" if n % 101 == 0 else "OK",
                "startstops": startstops,
                "nbytes": 28,
                "typename": "int",
            }
        )
    return stream


def synthetic_recorder(t0: float, seconds: int = 30) -> RunRecorder:
    clock = [t0]
    recorder = RunRecorder(clock=lambda: clock[0])
    for k in range(seconds):
        clock[0] = t0 + k
        recorder.sample(identity({"worker-0": 2**28 + k * 2**22, "worker-1": 2**28 + k * 2**23}))
    return recorder


def synthetic_status(t0: float) -> dict:
    return {
        "status": "failed",
        "exit_code": 3,
        "workflow": "/analysis/reana.yaml",
        "started_at": iso(t0),
        "finished_at": iso(t0 + 31),
        "duration_seconds": 31.0,
        "cluster": {"backend": "local", "workers_requested": 2, "workers_ready": 2},
        "steps": [
            {
                "name": "prepare",
                "status": "finished",
                "exit_code": 0,
                "started_at": iso(t0 + 1),
                "finished_at": iso(t0 + 10),
            },
            {
                "name": "analyse",
                "status": "failed",
                "exit_code": 3,
                "started_at": iso(t0 + 10),
                "finished_at": iso(t0 + 30),
                "reason": "Error",
                "peak_rss_bytes": 3 * 2**20,
            },
            {"name": "plot", "status": "skipped", "exit_code": None},
        ],
        "events": [
            {
                "time": iso(t0 + 12),
                "component": "worker worker-1",
                "what": "OOM-killed",
                "why": "it went past its 1 GiB limit <script>alert(1)</script>",
            },
        ],
    }


class Resources(HTMLParser):
    """Every URL the page would load: scripts, styles, images, frames."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0
        self.documents: list[str] = []  # bokeh's plots (their data and labels), as JSON
        self._in_json = False
        self.page = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "data"):
            if values.get(name) and tag in ("script", "link", "img", "iframe", "object"):
                self.urls.append(f"{tag} {name}={values[name]}")
        if tag == "script" and not values.get("src"):
            self.inline_scripts += 1
            self._in_json = values.get("type") == "application/json"

    def handle_data(self, data: str) -> None:
        if self._in_json:
            self.documents.append(data)

    def handle_endtag(self, tag: str) -> None:
        self._in_json = False

    def text(self) -> str:
        """What the page shows: its HTML and the plots' documents, unescaped."""
        plots = [json.dumps(json.loads(d), ensure_ascii=False) for d in self.documents]
        return "\n".join([self.page, *plots])


def resources(page: str) -> Resources:
    parser = Resources()
    parser.page = page
    parser.feed(page)
    return parser


def assert_png(path: Path) -> Image.Image:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    image.load()
    width, height = image.size
    assert 800 <= width <= 2400 and 600 <= height <= 2400, image.size
    return image


def test_report_of_a_run_has_both_files_and_loads_nothing(tmp_path: Path) -> None:
    html_path, png_path = write_report(
        tmp_path, synthetic_status(T0), synthetic_stream(T0, 1000), synthetic_recorder(T0)
    )
    assert (html_path, png_path) == (tmp_path / "report.html", tmp_path / "report.png")
    page = html_path.read_text()
    found = resources(page)
    shown_text = found.text()
    assert found.urls == []  # BokehJS and the styles are inline
    assert found.inline_scripts >= 2  # BokehJS itself, and the document's script
    # no tag fetches from a network (BokehJS's own code names a CDN for MathJax, unused here)
    assert not re.search(r"<(script|link|img|iframe)[^>]*(src|href)=[\"']?(https?:)?//", page)
    for shown in ("worker-0 · thread 1", "worker-1 · thread 2", "prepare", "analyse",
                  "OOM-killed", "from_sequence", "1000 in the scheduler", "3.00 MiB"):  # fmt: skip
        assert shown in shown_text, shown
    assert "<script>alert(1)</script>" not in page  # the user's words are escaped
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    gray = np.asarray(assert_png(png_path).convert("L"))
    assert (gray < 200).mean() > 0.05  # bars and lines, not a blank figure


def test_empty_inputs_still_give_both_files(tmp_path: Path) -> None:
    html_path, png_path = write_report(tmp_path / "state", {}, [], None)
    page = html_path.read_text()
    assert "No task stream was recorded" in page
    assert "No samples of the workers were recorded" in page
    assert resources(page).urls == []
    assert_png(png_path)


def test_a_run_that_failed_at_cluster_start_still_gives_a_report(tmp_path: Path) -> None:
    status = {
        "status": "failed",
        "exit_code": 69,
        "workflow": "/analysis/reana.yaml",
        "started_at": iso(T0),
        "finished_at": iso(T0 + 4.5),
        "duration_seconds": 4.5,
        "cluster": {"backend": "local", "workers_requested": 2, "workers_ready": 0},
        "steps": [{"name": "analyse", "status": "skipped", "exit_code": None}],
        "message": "the cluster failed to start: the scheduler exited with 1",
    }
    html_path, png_path = write_report(tmp_path, status, [], RunRecorder())
    page = html_path.read_text()
    assert "exit code 69" in page
    assert "the cluster failed to start: the scheduler exited with 1" in page
    assert "No step ran." in page and "skipped" in page
    assert_png(png_path)


ODD_STREAM = [
    {},  # no worker, thread, key
    {"worker": "tcp://127.0.0.1:4000", "thread": 1, "key": b"bytes-key", "startstops": None},
    {"worker": "tcp://127.0.0.1:4000", "thread": 1, "key": "x-1", "status": "OK",
     "startstops": [{"action": "compute", "start": None, "stop": 3.0}, "nonsense",
                    {"action": "spill", "start": T0 + 1, "stop": T0 + 2}]},
    {"worker": "tcp://127.0.0.1:4000", "thread": 2, "key": ("y-1", 0), "status": "error",
     "startstops": [{"action": "compute", "start": T0 + 1, "stop": T0 + 1}]},
    "not a message",
]  # fmt: skip
ODD_STATUS = {
    "started_at": "yesterday",
    "duration_seconds": None,
    "cluster": "local",
    "steps": [{"name": "a", "status": "running", "started_at": iso(T0), "exit_code": "?"}, 7],
    "events": [{"time": None, "what": "worker lost"}, {"time": "2026-13-45T00:00:00Z"}, None],
}


@pytest.mark.parametrize(
    "status, stream",
    [(ODD_STATUS, ODD_STREAM), ({}, ODD_STREAM), (ODD_STATUS, [])],
    ids=["both", "stream", "status"],
)
def test_odd_inputs_still_give_a_report(tmp_path: Path, status: dict, stream: list) -> None:
    recorder = RunRecorder()
    recorder.sample({"workers": {"tcp://x:1": {"name": None, "metrics": {"memory": "?"}}}})
    recorder.sample({"workers": {"tcp://x:1": "not a worker"}})
    recorder.sample("not an identity")  # type: ignore[arg-type]
    html_path, png_path = write_report(tmp_path, status, stream, recorder)
    assert "daskstep run report" in html_path.read_text()
    assert_png(png_path)


def test_a_broken_figure_still_leaves_the_html_and_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "report.png").write_bytes(b"last run's figure")

    def broken(data: object) -> bytes:
        raise RuntimeError("no fonts")

    monkeypatch.setattr(report_png, "render_png", broken)
    with pytest.raises(RuntimeError, match="no fonts"):
        write_report(tmp_path, synthetic_status(T0), synthetic_stream(T0, 50), None)
    assert "analyse" in (tmp_path / "report.html").read_text()
    assert not (tmp_path / "report.png").exists()  # not last run's figure, as if it were this


def test_times_keys_and_colours_follow_the_task_stream() -> None:
    stream = synthetic_stream(T0, 400)
    compute = [{"action": "compute", "start": T0 + 3, "stop": T0 + 3.5}]
    stream.append({"worker": "tcp://10.0.0.9:1", "thread": 7, "key": ["x-1", 0], "status": "OK",
                   "startstops": compute})  # fmt: skip
    names = {"tcp://127.0.0.1:4000": "worker-0", "tcp://127.0.0.1:4001": "worker-1"}
    data = build(synthetic_status(T0), stream, names, [])
    assert data.tasks.rows == [
        "10.0.0.9:1 · thread 1",  # an address no sample named
        "worker-0 · thread 1",
        "worker-0 · thread 2",
        "worker-1 · thread 1",
        "worker-1 · thread 2",
    ]
    assert min(data.tasks.start) == pytest.approx(2 - 0.004)  # seconds since the run started
    assert ERROR_COLOR in data.tasks.color and "red" in data.tasks.color  # erred, transfers
    prefixes = {p.prefix: p for p in data.prefixes}
    assert set(prefixes) == {"inc", "sum", "from_sequence", "x"}
    assert sum(p.count for p in data.prefixes) == 401
    assert prefixes["x"].compute == pytest.approx(0.5)
    assert prefixes["inc"].errors == 2  # tasks 0 and 303: n % 101 == 0 and n % 3 == 0
    assert [s.start for s in data.steps] == [pytest.approx(1), pytest.approx(10), None]
    assert data.events[0].t == pytest.approx(12)


def test_recorder_names_workers_and_leaves_a_gap_for_a_lost_one() -> None:
    clock = [T0]
    recorder = RunRecorder(clock=lambda: clock[0])
    recorder.sample(identity({"worker-0": 100.0, "worker-1": 200.0}))
    clock[0] += 1
    recorder.sample(identity({"worker-0": 110.0}))  # worker-1 lost
    clock[0] += 1
    restarted = identity({"worker-0": 120.0, "worker-1": 50.0})
    restarted["workers"]["tcp://127.0.0.1:5999"] = restarted["workers"].pop("tcp://127.0.0.1:4001")
    recorder.sample(restarted)
    recorder.sample({"status": "no workers key"})  # a backend that cannot ask: nothing
    names, series = recorder.snapshot()
    assert names["tcp://127.0.0.1:4001"] == names["tcp://127.0.0.1:5999"] == "worker-1"
    one = {s.name: s for s in series}["worker-1"]
    assert one.times == [T0, T0 + 1, T0 + 2]
    assert one.memory[0] == 200.0 and math.isnan(one.memory[1]) and one.memory[2] == 50.0
    assert one.memory_limit == 2**30 and one.spilled[0] == 1024


def test_recorder_stays_small_over_a_long_run() -> None:
    clock = [T0]
    recorder = RunRecorder(clock=lambda: clock[0])
    for k in range(MAX_POINTS * 5):
        clock[0] = T0 + k
        recorder.sample(identity({"worker-0": float(k)}))
    (series,) = recorder.snapshot()[1]
    assert MAX_POINTS // 2 <= len(series.times) <= MAX_POINTS
    assert series.times[0] == T0 and series.times[-1] > T0 + MAX_POINTS * 4.5  # all of the run
    gaps = {round(b - a) for a, b in zip(series.times, series.times[1:], strict=False)}
    assert len(gaps) == 1  # evenly spaced


def test_recording_imports_no_plotting_and_daskstep_run_no_matplotlib() -> None:
    code = """if True:
        import json, sys
        import daskstep.report
        daskstep.report.RunRecorder().sample({"workers": {}})
        recording = [m for m in ("matplotlib", "bokeh") if m in sys.modules]
        import daskstep.cli, daskstep.run
        running = [m for m in ("matplotlib",) if m in sys.modules]
        print(json.dumps([recording, running]))
    """
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    assert json.loads(out.stdout) == [[], []]


@contextlib.contextmanager
def environment_kept() -> Iterator[None]:
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def real_cluster_run(workspace: Path) -> tuple[dict, list[dict], RunRecorder, float]:
    """A few hundred tasks (20 ms each, so their bars are wide) on a LocalCluster of two worker
    processes, sampled and recorded as `daskstep run` does; returns its status document, task
    stream, recorder and the seconds write_report took."""
    import dask.bag as db
    from distributed import Client, LocalCluster

    def work(x: int) -> int:
        time.sleep(0.02)
        return x + 1

    started = time.time()
    recorder = RunRecorder()
    with (
        environment_kept(),  # a Nanny leaves its pre-spawn variables in our environment
        LocalCluster(n_workers=2, threads_per_worker=2, processes=True, dashboard_address=None,
                     scheduler_port=0, host="127.0.0.1") as cluster,
        Client(cluster) as client,
    ):  # fmt: skip
        client.get_task_stream()  # installs the scheduler's recorder, as the backend does

        def sample() -> None:
            recorder.sample(
                client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.identity())
            )

        sample()
        step_start = time.time()
        future = client.compute(db.from_sequence(range(600), npartitions=150).map(work).sum())
        while not future.done():
            sample()
            time.sleep(0.3)
        assert future.result() == sum(range(1, 601))
        sample()
        step_stop = time.time()
        stream = client.get_task_stream(start=started)
    status = {
        "status": "finished",
        "exit_code": 0,
        "workflow": str(workspace / "reana.yaml"),
        "started_at": iso(started),
        "finished_at": iso(time.time()),
        "duration_seconds": round(time.time() - started, 3),
        "cluster": {"backend": "local", "workers_requested": 2, "workers_ready": 2},
        "steps": [
            {
                "name": "analyse",
                "status": "finished",
                "exit_code": 0,
                "started_at": iso(step_start),
                "finished_at": iso(step_stop),
            }
        ],
    }
    begin = time.perf_counter()
    # as `daskstep run` does: the data through a file, drawn by a process of its own
    page = write_report_later(workspace / ".daskstep", status, stream, recorder)
    waited = time.perf_counter() - begin
    assert PENDING in page.read_text() and waited < 1.0, "the run's prompt waited for it"
    wait_for_report(workspace / ".daskstep")
    return status, stream, recorder, time.perf_counter() - begin


def wait_for_report(folder: Path, timeout: float = 120) -> None:
    """Until the process drawing it has written both files (and removed its data)."""
    deadline = time.monotonic() + timeout
    while (folder / DATA).exists() or PENDING in (folder / "report.html").read_text():
        assert time.monotonic() < deadline, (folder / "report.log").read_text()
        time.sleep(0.1)


@pytest.mark.integration
@pytest.mark.slow
def test_report_of_a_real_local_cluster(tmp_path: Path) -> None:
    _, stream, recorder, seconds = real_cluster_run(tmp_path)
    assert len(stream) >= 300  # map and sum partitions
    series = recorder.snapshot()[1]
    assert sorted(s.name for s in series) == ["0", "1"]
    assert all(len(s.times) >= 2 for s in series)
    found = resources((tmp_path / ".daskstep/report.html").read_text())
    assert found.urls == []
    for shown in ("0 · thread 1", "1 · thread 2", "from_sequence", "analyse"):
        assert shown in found.text(), shown
    assert_png(tmp_path / ".daskstep/report.png")
    assert seconds < 60  # generous: two shared cores
