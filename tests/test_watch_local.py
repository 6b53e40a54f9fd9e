"""What happens to the local cluster during a step is seen within seconds: a worker killed by a
task, a worker killed for memory, and the scheduler lost, each as one event in status.json, one
line in the job log and on the terminal; losing the scheduler fails the run at once."""

from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import daskstep, descendants, wait_gone, write_workflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ONCE = """\
import json, os, sys, time
from distributed import Client

def task(marker, allocate):
    if not os.path.exists(marker):
        open(marker, "w").write(str(time.time()))
        if allocate:
            hog = bytearray(allocate)
            for i in range(0, allocate, 4096):
                hog[i] = 1
            time.sleep(30)
        os.kill(os.getpid(), 9)
    return os.getpid()

client = Client(os.environ["DASK_SCHEDULER_URI"])
future = client.submit(task, os.path.abspath("marker"), int(sys.argv[1]), pure=False)
print("result", future.result())
# news while the step runs, as users watch it: the event in status.json before the step ends
for _ in range(600):
    try:
        with open(".daskstep/status.json") as f:
            events = json.load(f).get("events")
    except ValueError:  # being replaced
        events = None
    if any(e["what"] != "paused for memory" for e in events or ()):  # the kill, not a pause
        open("seen", "w").write(str(time.time()))
        break
    time.sleep(0.1)
"""


def status(folder: Path) -> dict:
    return json.loads((folder / ".daskstep" / "status.json").read_text())


def seconds(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def run(folder: Path, allocate: int, memory: str = "1Gi") -> tuple[int, str, str]:
    (folder / "once.py").write_text(ONCE)
    reana = write_workflow(folder, [("work", [f"python once.py {allocate}"])], memory=memory)
    proc = daskstep("run", str(reana))
    out, err = proc.communicate(timeout=180)
    return proc.returncode, out, err


def test_a_task_that_kills_its_worker_is_reported_naming_it(tmp_path: Path) -> None:
    code, out, err = run(tmp_path, 0)
    assert code == 0, err
    assert "result" in out  # the task ran again on a restarted or other worker
    (event,) = status(tmp_path)["events"]
    assert event["component"].startswith("worker worker-") and event["what"] == "lost"
    assert event["why"] == "it was killed by SIGKILL; restarting it"
    assert (tmp_path / "seen").exists(), "not reported while the step ran"
    line = f"warning: {event['component']}: lost: it was killed by SIGKILL; restarting it"
    assert line in err
    assert line in (tmp_path / ".daskstep" / "runs" / "1" / "raw" / "job.log").read_text()


def test_a_task_that_allocates_past_the_limit_is_reported_as_an_oom_kill(tmp_path: Path) -> None:
    code, _, err = run(tmp_path, 600 * 2**20, memory="512Mi")
    assert code == 0, err
    events = status(tmp_path)["events"]
    # on its way past 95% the worker passes 80% and pauses: the watch may see that first
    (event,) = [e for e in events if e["what"] != "paused for memory"]
    assert event["what"] == "killed for memory (OOM)", event
    assert "past 95% of its 512.00 MiB limit; restarting it" in event["why"]
    assert f"{event['component']}: killed for memory (OOM)" in err
    # while the step ran, not at its end (the time it takes depends on the machine's load: a
    # loaded CI took 11.5 s from the task's start, a quiet machine 1-2 s)
    assert (tmp_path / "seen").exists(), "not reported while the step ran"


def test_losing_the_scheduler_fails_the_run_at_once_and_leaves_nothing(tmp_path: Path) -> None:
    kill = (
        'python -c "import os, signal; from distributed import Client; '
        "c = Client(os.environ['DASK_SCHEDULER_URI']); pid = c.run_on_scheduler(os.getpid); "
        "open('killed', 'w').write(str(__import__('time').time())); os.kill(pid, signal.SIGKILL)\""
    )
    reana = write_workflow(tmp_path, [("work", [kill, "sleep 60"]), ("next", ["echo next"])])
    proc = daskstep("run", str(reana))
    started = time.monotonic()
    pids: set[int] = set()
    while proc.poll() is None and time.monotonic() - started < 120:
        pids |= descendants(proc.pid)
        time.sleep(0.05)
    _, err = proc.communicate(timeout=60)
    ended = time.time()
    assert proc.returncode == 71, err  # SchedulerLost, not 69's "failed to start"
    assert ended - float((tmp_path / "killed").read_text()) < 10, "the run went on too long"
    doc = status(tmp_path)
    assert "the scheduler was killed by SIGKILL" in doc["message"], doc["message"]
    assert doc["reason"] == "SchedulerLost" and doc["exit_code"] == 71
    (event,) = [e for e in doc["events"] if e["component"] == "scheduler"]
    assert event["what"] == "lost" and "killed by SIGKILL" in event["why"]
    job_log = (tmp_path / ".daskstep" / "logs" / "job.log").read_text()
    assert "error: the local cluster stopped: the scheduler was killed by SIGKILL" in job_log
    assert doc["steps"][0]["status"] in ("failed", "cancelled") and doc["steps"][1]["status"] == (
        "skipped"
    )
    assert "error: the local cluster stopped: the scheduler was killed by SIGKILL" in err
    # daskstep stopped the step: said so, not as a step that failed; the error said once
    assert re.search(r"daskstep: step \S+ stopped \(exit code \d+\): the cluster failed", err)
    assert [line for line in err.splitlines() if line.startswith("error:")] == [
        line for line in err.splitlines() if "the scheduler was killed by SIGKILL" in line
    ][:1]
    assert not wait_gone(pids, 5), "processes of the run left running"


PAUSE = """\
import os, time
from distributed import Client

def hold(n, where):
    data = bytearray(n)
    for i in range(0, n, 4096):
        data[i] = 1
    with open(os.path.join(where, "held"), "w") as f:
        f.write(str(time.time()))
    time.sleep(4)
    with open(os.path.join(where, "freed"), "w") as f:
        f.write(str(time.time()))
    return len(data)

client = Client(os.environ["DASK_SCHEDULER_URI"])
print("held", client.submit(hold, 370 * 2**20, os.getcwd(), pure=False).result())
time.sleep(2)
"""


def test_a_worker_paused_for_memory_is_said_and_so_is_its_return(tmp_path: Path) -> None:
    (tmp_path / "pause.py").write_text(PAUSE)
    reana = write_workflow(tmp_path, [("work", ["python pause.py"])], memory="512Mi")
    proc = daskstep("run", str(reana))
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    events = status(tmp_path)["events"]
    whats = [e["what"] for e in events]
    assert whats == ["paused for memory", "running again"], events
    assert events[0]["component"] == events[1]["component"]
    assert "of its 512.00 MiB limit" in events[0]["why"]
    # said while it lasted: after the task took the memory, and before it let it go (the
    # scheduler is asked once a second); its return after that
    held, freed = (float((tmp_path / name).read_text()) for name in ("held", "freed"))
    paused, running = (seconds(e["time"]) for e in events)
    assert held - 0.1 < paused < freed + 1.5, (held, paused, freed)
    assert running > freed - 0.1, (freed, running)
    assert f"warning: {events[0]['component']}: paused for memory: it holds" in err
