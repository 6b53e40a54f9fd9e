"""Soak: a million numbered lines, rotations, a copytruncate, and a sidecar killed 20+ times.

Modelled on Fluent Bit's rotation tests: whatever happens to the shipper, the store must end up
with every line exactly once, in order, per source.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import script

from sidecar.store import read_lines

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SOURCES = ("alpha", "beta", "gamma")
LINES_PER_SOURCE = 340_000  # 1,020,000 in all
ROTATE_EVERY = 60_000
KILLS = 22

WRITER = script(
    """
    import os, shutil, sys, time
    folder, per_source, rotate_every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    names = sys.argv[4:]
    files = {n: open(os.path.join(folder, n + ".log"), "ab") for n in names}
    rotations = {n: 0 for n in names}
    copytruncated = False

    def rotate(name):
        path = os.path.join(folder, name + ".log")
        rotations[name] += 1
        for i in range(rotations[name], 0, -1):  # logrotate: .1 -> .2, ... then the live file
            older = f"{path}.{i}"
            if os.path.exists(older):
                os.rename(older, f"{path}.{i + 1}")
        files[name].close()
        global copytruncated
        if name == names[0] and rotations[name] == 3 and not copytruncated:
            shutil.copyfile(path, path + ".1")  # copytruncate, once
            os.truncate(path, 0)
            copytruncated = True
        else:
            os.rename(path, path + ".1")
        files[name] = open(path, "ab")

    for i in range(per_source):
        for name in names:
            files[name].write(f"{name} {i:07d}\\n".encode())
        if i % 2000 == 1999:
            for f in files.values():
                f.flush()
            time.sleep(0.004)
        if i % rotate_every == rotate_every - 1:
            for name in names:
                files[name].flush()
                rotate(name)
    for f in files.values():
        f.close()
    """
)


def sidecar(workspace: Path, raw: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "daskstep", "sidecar", "logs", "--workspace", str(workspace)]
        + ["--source", f"worker={raw}/*.log*"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def catches(pid: int, signum: int, timeout: float) -> None:
    """Until the process has a handler for `signum` (its SigCgt mask, /proc/PID/status)."""
    deadline = time.monotonic() + timeout
    while True:
        status = Path(f"/proc/{pid}/status").read_text()
        caught = int(
            next(ln for ln in status.splitlines() if ln.startswith("SigCgt:")).split()[1], 16
        )
        if caught & (1 << (signum - 1)):
            return
        assert time.monotonic() < deadline, f"pid {pid} never caught signal {signum}"
        time.sleep(0.01)


def test_every_line_exactly_once_through_rotations_copytruncate_and_kills(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    writer_script = tmp_path / "writer.py"
    writer_script.write_text(WRITER)
    writer = subprocess.Popen(
        [sys.executable, str(writer_script), str(raw), str(LINES_PER_SOURCE), str(ROTATE_EVERY)]
        + list(SOURCES)
    )
    rng = random.Random(20261127)
    kills = 0
    shipper = sidecar(tmp_path, raw)
    try:
        while writer.poll() is None or kills < KILLS:
            time.sleep(rng.uniform(0.05, 0.6))
            shipper.send_signal(signal.SIGKILL)
            shipper.wait()
            kills += 1
            shipper = sidecar(tmp_path, raw)
        assert writer.wait() == 0
        time.sleep(1.5)  # past the rotation wait, so the last live files are reached
        # a SIGTERM before its handler is up ends a sidecar with nothing drained (that is why
        # `daskstep run` stops it by closing its stdin): on a loaded machine, 1.5 s was not
        # always enough for the last one to start
        catches(shipper.pid, signal.SIGTERM, timeout=60)
        shipper.send_signal(signal.SIGTERM)
        _, err = shipper.communicate(timeout=120)
        assert shipper.returncode == 0, err.decode()
    finally:
        for proc in (writer, shipper):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    store = tmp_path / ".daskstep" / "logs" / "workers"
    for name in SOURCES:
        numbers = []
        for line in read_lines(store / f"{name}.log"):
            label, number = line.data.split()
            assert label.decode() == name
            numbers.append(int(number))
        missing = sorted(set(range(LINES_PER_SOURCE)) - set(numbers))
        assert not missing, f"{name}: {len(missing)} lines lost, first {missing[:5]}"
        doubled = len(numbers) - len(set(numbers))
        assert doubled == 0, f"{name}: {doubled} lines stored twice"
        assert numbers == list(range(LINES_PER_SOURCE)), f"{name}: out of order"
    print(f"{kills} kills; {len(SOURCES) * LINES_PER_SOURCE} lines, each exactly once, in order")
    assert kills >= 20
    assert os.path.exists(store / "alpha.log.index")
