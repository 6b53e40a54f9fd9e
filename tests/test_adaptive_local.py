"""Adaptive scaling on the local backend, for real: a wide phase, then a long serial one, then
idle. The workers rise to the maximum with the wide phase and never above it, fall to the
minimum through the scheduler's retire_workers while the serial task runs, and no task runs
twice: the wide phase's results, held by the client, move off the retired workers."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from conftest import daskstep, write_workflow

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TWO_PHASES = """\
import json, os, threading, time
from distributed import Client, wait

client = Client(os.environ["DASK_SCHEDULER_URI"])
samples, done = [], threading.Event()

def sample():
    while not done.is_set():
        samples.append((time.time(), len(client.scheduler_info()["workers"])))
        time.sleep(0.5)

def wide(i, ran):
    with open(ran, "a") as f:  # one line per run of a task: a recomputed one shows twice
        f.write(f"{i}\\n")
    time.sleep(0.1)
    return i * i

def serial(seconds):
    time.sleep(seconds)
    return seconds

threading.Thread(target=sample, daemon=True).start()
ran = os.path.abspath("ran.txt")
t0 = time.time()
squares = client.map(wide, range(200), ran=ran, pure=False)
wait(squares)
t1 = time.time()
client.submit(serial, 12, pure=False).result()
t2 = time.time()
total = client.submit(sum, squares).result()
time.sleep(2)
done.set()
json.dump({"samples": samples, "wide": [t0, t1], "serial": [t1, t2], "total": total},
          open("phases.json", "w"))
"""


def two_phases(folder: Path, most: int, *args: str, env: dict | None = None) -> tuple[dict, str]:
    """Run the two-phase step with --adapt; its samples and daskstep's stderr."""
    (folder / "phases.py").write_text(TWO_PHASES)
    reana = write_workflow(folder, [("phases", ["python phases.py"])], workers=most)
    proc = daskstep("run", str(reana), "--adapt", *args, env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return json.loads((folder / "phases.json").read_text()), err


def test_workers_follow_a_wide_then_serial_step_and_no_task_runs_twice(tmp_path: Path) -> None:
    phases, err = two_phases(tmp_path, 4)
    followed(tmp_path, phases, err, fewest=1, most=4)


def followed(
    tmp_path: Path, phases: dict, err: str, fewest: int, most: int, rise_within: float = 5.0
) -> None:
    """Up to `most` within `rise_within` seconds of the wide phase's start, and never above;
    down to `fewest` during the serial task; nothing ran twice; each change said."""
    samples = phases["samples"]
    assert phases["total"] == sum(i * i for i in range(200))
    ran = (tmp_path / "ran.txt").read_text().split()
    assert sorted(map(int, ran)) == list(range(200)), "a task ran twice, or not at all"

    counts = [n for _, n in samples]
    assert max(counts) == most, counts  # up to the maximum, never above it
    assert counts[0] <= max(fewest, 1), counts  # it started with the fewest
    wide_end, serial_end = phases["wide"][1], phases["serial"][1]
    during_wide = [n for t, n in samples if t <= wide_end]
    assert most in during_wide, (during_wide, counts)
    risen = min(t for t, n in samples if n == most) - phases["wide"][0]
    assert risen <= rise_within, f"up to {most} workers {risen:.1f} s into the wide phase"
    # the serial task holds one worker: down to that (or the minimum, if more); the others
    # idle from the wide phase's end, and gone within 20 s (the serial task lasts 12 s)
    floor = max(fewest, 1)
    settled = [t for t, n in samples if wide_end < t <= serial_end and n == floor]
    assert settled, (counts, "not down during the serial task")
    print(f"up to {most} in {risen:.1f} s; down to {floor} {settled[0] - wide_end:.1f} s after")

    doc = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    whats = [(e["component"], e["what"]) for e in doc["events"]]
    ups = [e["why"] for e in doc["events"] if e["what"] == f"scaled up to {most} workers"]
    assert ups, whats
    waiting = re.fullmatch(r"from \d; (\d+) tasks to run", ups[0])
    assert waiting and int(waiting[1]) > 100, ups  # the wide phase's 200, most still to run
    retired = [e for e in doc["events"] if e["what"] == "retired"]
    moved = [e for e in retired if e["why"].endswith("; its data moved first")]
    assert len(moved) >= most - floor, retired  # through the scheduler
    assert "too few workers" not in [w for _, w in whats]
    assert f"scaled up to {most} workers" in err and "retired" in err
