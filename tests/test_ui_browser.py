"""`daskstep ui` in Debian's Chromium, headless, driven by chromedriver (Selenium), while a
real run goes on: the list shows it running, its page follows the job's and a worker's log
live, and after the run shows it finished with its histogram. Chromium's own network log must
show no request leaving the server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require, wait_for, write_workflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHOT = Path(os.environ.get("DASKSTEP_UI_SCREENSHOT", "build/ui.png"))

STEP = """\
import os, time
from distributed import Client
from PIL import Image

client = Client(os.environ["DASK_SCHEDULER_URI"])

def task(i):
    for n in range(24):  # a line every half second: a log that grows while it is watched
        print("task tick", n, flush=True)
        time.sleep(0.5)
    print("hello from a task", i, flush=True)
    return i * i

future = client.submit(task, 7)
for n in range(12):
    print("step says", n, flush=True)
    time.sleep(0.5)
print("result", future.result(), flush=True)
os.makedirs("results", exist_ok=True)
image = Image.new("RGB", (120, 80), (40, 90, 160))
image.save("results/histogram.png")
time.sleep(2)
"""


def driver_or_skip():  # type: ignore[no-untyped-def]
    chromedriver = shutil.which("chromedriver")
    chromium = shutil.which("chromium")
    missing = "chromium and chromedriver are needed (apt-get install chromium chromium-driver)"
    require(chromium is not None and chromedriver is not None, missing)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        require(False, "selenium is not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1400"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    return webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))


def requests_of(driver) -> list[str]:  # type: ignore[no-untyped-def]
    """Every URL the pages asked for, from Chromium's own network log."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_the_pages_follow_a_real_run_live_in_chromium(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver = driver_or_skip()
    (tmp_path / "step.py").write_text(STEP)
    reana = write_workflow(tmp_path, [("plot", ["python step.py"])], workers=1, memory="512Mi")
    daskstep = [sys.executable, "-m", "daskstep"]
    run = subprocess.Popen([*daskstep, "run", str(reana)], stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)  # fmt: skip
    ui = None
    try:
        wait_for(lambda: (tmp_path / ".daskstep" / "runs" / "1").is_dir(), 30, "the run's folder")
        ui = subprocess.Popen([*daskstep, "ui", str(tmp_path), "--port", "0"],
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
        url = ui.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:"), url
        driver.get(url)

        def cells(selector: str) -> list[str]:
            return [e.text for e in driver.find_elements(By.CSS_SELECTOR, selector)]

        wait_for(lambda: "running" in cells("#runs td.status"), 60, "the run listed as running")
        driver.find_element(By.CSS_SELECTOR, "#runs a").click()
        log = lambda: driver.find_element(By.ID, "log").text  # noqa: E731
        wait_for(lambda: "step says 3" in log(), 60, "the job's lines, live")
        seen = log().count("step says")
        wait_for(lambda: log().count("step says") > seen, 10, "more of the job's lines")
        wait_for(lambda: cells("#tabs button[data-s^='worker:']"), 30, "a worker's tab")
        driver.find_element(By.CSS_SELECTOR, "#tabs button[data-s^='worker:']").click()
        wait_for(lambda: "task tick" in log(), 30, "the task's lines in its worker's log")
        ticks = log().count("task tick")
        assert "hello from a task" not in log()  # the task is still going
        wait_for(lambda: log().count("task tick") > ticks, 10, "the worker's lines, live")
        wait_for(lambda: "hello from a task 7" in log(), 30, "the task's last line")
        driver.find_element(By.CSS_SELECTOR, "#tabs button[data-s='workers']").click()
        wait_for(lambda: "] hello from a task 7" in log(), 30, "the line among all the workers'")
        wait_for(lambda: driver.find_element(By.ID, "status").text == "finished", 90, "finished")
        driver.find_element(By.CSS_SELECTOR, "#step-table button.step").click()  # its lines
        wait_for(lambda: log().startswith("daskstep: step plot (1/1) started"), 15, "the step")
        image = "img[alt='results/histogram.png']"
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, image), 15, "the histogram")
        loaded = driver.execute_script(
            f'const i=document.querySelector("{image}");return i.complete&&i.naturalWidth'
        )
        assert loaded == 120
        SHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SHOT))
        here = url.split("/")[2]
        asked = requests_of(driver)
        assert asked and all(u.split("/")[2] == here for u in asked if "://" in u), asked
        assert all(u.startswith(("http://", "data:", "blob:")) for u in asked), asked
        assert run.wait(60) == 0, run.stderr.read()[-2000:] if run.stderr else ""
    finally:
        driver.quit()
        run.kill()
        if ui is not None:
            ui.terminate()
            ui.wait(10)
