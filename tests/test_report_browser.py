"""The acceptance of the report: report.html opens in headless Chromium from the file, with no
server and no network, and its task stream and memory plots are drawn. The same pixel check
fails on a report with no data and on a blank page, so it can fail."""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import require
from PIL import Image
from test_report import real_cluster_run

from daskstep.report import write_report
from daskstep.report.data import WORKER_COLORS
from daskstep.report.html import LINE_PLOT_HEIGHT

pytestmark = pytest.mark.integration

WINDOW = (1400, 2400)
TOLERANCE = 8  # per channel: a bar's or a line's own colour, not a blend at its edge
MIN_TASK_PIXELS = 3000  # the bars of a few hundred 20 ms tasks cover far more
MIN_LINE_PIXELS = 400  # two 2 px lines over a few seconds of the plot cover far more
# the memory plot lies right under the task stream's last row of bars, the CPU plot under it
MEMORY_BAND = LINE_PLOT_HEIGHT + 30


def chromium_binary() -> str:
    found = next(
        (p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p),
        None,
    )
    require(found is not None, "chromium is not installed (apt-get install chromium)")
    assert found is not None
    return found


@dataclass
class Opened:
    screenshot: np.ndarray  # height x width x RGB
    page_requests: list[str]  # http(s) URLs the page itself asked for


def open_in_chromium(page: Path, folder: Path) -> Opened:
    """A screenshot of `page` opened from the file; Chromium's own background traffic (updates,
    accounts) is told apart from the page's by the page's network isolation key (file://)."""
    shot, netlog = folder / "screenshot.png", folder / "netlog.json"
    command = [
        chromium_binary(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={folder / 'profile'}",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # loopback only, even if the page asked
        f"--log-net-log={netlog}",
        f"--screenshot={shot}",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--virtual-time-budget=10000",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert shot.exists(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    log = json.loads(netlog.read_text())
    start_job = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    requests = [
        e["params"]["url"]
        for e in log["events"]
        if e["type"] == start_job
        and "url" in e.get("params", {})
        and "file://" in e["params"].get("network_isolation_key", "")
        and e["params"]["url"].startswith(("http:", "https:"))
    ]
    return Opened(np.asarray(Image.open(shot).convert("RGB"), dtype=int), requests)


def rgb(color: str) -> tuple[int, int, int]:
    from matplotlib.colors import to_rgb

    return tuple(round(c * 255) for c in to_rgb(color))  # type: ignore[return-value]


def pixels_of(screenshot: np.ndarray, colors: list[str]) -> np.ndarray:
    """The rows (y) of the pixels drawn in one of `colors`."""
    hit = np.zeros(screenshot.shape[:2], dtype=bool)
    for color in colors:
        hit |= (np.abs(screenshot - np.array(rgb(color))) <= TOLERANCE).all(axis=2)
    return np.nonzero(hit)[0]


@dataclass
class Drawn:
    """Pixels drawn in the task stream's colours, and in the workers' in the memory plot's band
    and under it (the CPU plot)."""

    tasks: int
    memory: int
    cpu: int

    def ok(self) -> bool:
        return (
            self.tasks >= MIN_TASK_PIXELS
            and self.memory >= MIN_LINE_PIXELS
            and self.cpu >= MIN_LINE_PIXELS
        )


def drawn(screenshot: np.ndarray, task_colors: list[str], worker_colors: list[str]) -> Drawn:
    tasks = pixels_of(screenshot, task_colors)
    lines = pixels_of(screenshot, worker_colors)
    bottom = int(tasks.max()) if len(tasks) else screenshot.shape[0]
    memory = lines[(lines > bottom) & (lines <= bottom + MEMORY_BAND)]
    cpu = lines[lines > bottom + MEMORY_BAND]
    return Drawn(len(tasks), len(memory), len(cpu))


@dataclass
class RealRun:
    page: Path  # its report.html
    status: dict
    stream: list[dict]
    task_colors: list[str]  # its task prefixes'
    worker_colors: list[str]


@pytest.fixture(scope="module")
def real_run(tmp_path_factory: pytest.TempPathFactory) -> RealRun:
    """A real LocalCluster run and its report."""
    from distributed.utils import color_of

    from daskstep.report.data import prefix_of

    chromium_binary()  # skip (or fail in CI) before starting a cluster for nothing
    workspace = tmp_path_factory.mktemp("run")
    status, stream, recorder, _ = real_cluster_run(workspace)
    task_colors = sorted({color_of(prefix_of(m["key"])) for m in stream})
    worker_colors = WORKER_COLORS[: len(recorder.snapshot()[1])]
    assert not set(map(rgb, task_colors)) & set(map(rgb, worker_colors))
    page = workspace / ".daskstep/report.html"
    return RealRun(page, status, stream, task_colors, worker_colors)


@pytest.mark.slow
def test_report_opens_from_the_file_and_draws_its_plots(real_run: RealRun, tmp_path: Path) -> None:
    opened = open_in_chromium(real_run.page, tmp_path)
    assert opened.page_requests == []
    seen = drawn(opened.screenshot, real_run.task_colors, real_run.worker_colors)
    assert seen.ok(), seen


@pytest.mark.slow
def test_the_check_fails_on_a_report_without_data(real_run: RealRun, tmp_path: Path) -> None:
    page, _ = write_report(tmp_path / "state", {"status": "failed", "exit_code": 69}, [], None)
    opened = open_in_chromium(page, tmp_path)
    assert opened.screenshot.mean() < 254  # the page itself is drawn (text, empty axes)
    seen = drawn(opened.screenshot, real_run.task_colors, real_run.worker_colors)
    assert seen == Drawn(0, 0, 0)
    assert not seen.ok()


@pytest.mark.slow
def test_the_check_fails_when_only_the_task_stream_is_drawn(
    real_run: RealRun, tmp_path: Path
) -> None:
    page, _ = write_report(tmp_path / "state", real_run.status, real_run.stream, None)
    opened = open_in_chromium(page, tmp_path)
    seen = drawn(opened.screenshot, real_run.task_colors, real_run.worker_colors)
    assert seen.tasks >= MIN_TASK_PIXELS and seen.memory == seen.cpu == 0, seen
    assert not seen.ok()


@pytest.mark.slow
def test_the_check_fails_on_a_blank_page(real_run: RealRun, tmp_path: Path) -> None:
    page = tmp_path / "blank.html"
    page.write_text("<!DOCTYPE html><html><body></body></html>\n")
    opened = open_in_chromium(page, tmp_path)
    seen = drawn(opened.screenshot, real_run.task_colors, real_run.worker_colors)
    assert not seen.ok(), seen


def test_the_network_check_sees_a_page_that_loads_from_the_network(tmp_path: Path) -> None:
    page = tmp_path / "remote.html"
    page.write_text(
        '<!DOCTYPE html><html><head><script src="https://cdn.example.invalid/bokeh.js">'
        "</script></head><body></body></html>\n"
    )
    assert open_in_chromium(page, tmp_path).page_requests == [
        "https://cdn.example.invalid/bokeh.js"
    ]
