"""The HTCondor pool of tests/htcondor.py is real: a plain job runs, and dask-jobqueue's
HTCondorCluster gets workers from it, computes, and leaves no job behind when closed.

Everything that talks to the pool runs as its user (nobody) with the job venv's Python, as a
batch user would; the timings are printed (pytest -s) so that the tuning can be checked.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from htcondor import POOL_GID, POOL_UID, HTCondorPool, ensure_installed, ensure_job_python

REPO = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.integration


def installed() -> float:
    """Seconds to install HTCondor (or find it cached); skip, or fail in CI, when it cannot be."""
    require(os.geteuid() == 0, "the HTCondor pool runs as nobody, started by root (setpriv)")
    began = time.monotonic()
    try:
        ensure_installed()
    except Exception as exc:  # no mirror, a pinned version gone, no patchelf...
        require(False, f"HTCondor could not be installed: {exc}")
    return time.monotonic() - began


@pytest.fixture(scope="module")
def pool() -> Iterator[HTCondorPool]:
    seconds = installed()
    with HTCondorPool() as running:
        print(f"\n[htcondor] install {seconds:.1f}s, pool up {running.startup_seconds:.1f}s")
        yield running
        began = time.monotonic()
    print(f"[htcondor] teardown {time.monotonic() - began:.1f}s")


@pytest.fixture(scope="module")
def job_python() -> Path:
    began = time.monotonic()
    try:
        python = ensure_job_python(REPO)
    except Exception as exc:
        require(False, f"the job venv could not be built: {exc}")
    print(f"\n[htcondor] job venv {time.monotonic() - began:.1f}s")
    return python


def user_folder(pool: HTCondorPool, name: str) -> Path:
    """A folder the pool user owns: its submit files, outputs and logs go there."""
    folder = pool.home / name
    folder.mkdir()
    os.chown(folder, POOL_UID, POOL_GID)
    return folder


def queue(pool: HTCondorPool) -> list[str]:
    """The ids of every job still in the schedd's queue, whatever its state."""
    done = pool.run([pool.condor_q, "-allusers", "-af", "GlobalJobId"])
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def wait_empty(pool: HTCondorPool, timeout: float = 60) -> float:
    """Seconds until condor_q shows no job."""
    began = time.monotonic()
    while queue(pool):
        assert time.monotonic() - began < timeout, f"jobs left: {queue(pool)}{pool.logs()}"
        time.sleep(0.2)
    return time.monotonic() - began


def test_plain_job_runs(pool: HTCondorPool) -> None:
    folder = user_folder(pool, "plain")
    (folder / "job.sub").write_text(
        textwrap.dedent("""\
            executable = /bin/sh
            arguments = "-c 'sleep 1; echo hello from condor'"
            output = out.txt
            error = err.txt
            log = job.log
            request_cpus = 1
            request_memory = 64
            queue
        """)
    )
    began = time.monotonic()
    done = pool.run([pool.condor_submit, "job.sub"], cwd=folder)  # the job runs in cwd
    assert done.returncode == 0, done.stderr
    assert "1 job(s) submitted" in done.stdout
    waited = wait_empty(pool, timeout=60)
    print(f"[htcondor] sleep-1 job done {time.monotonic() - began:.1f}s after submit")
    assert waited < 30
    assert (folder / "out.txt").read_text() == "hello from condor\n"
    assert "Normal termination (return value 0)" in (folder / "job.log").read_text()


DRIVER = """\
import json, os, sys, time

t0 = time.monotonic()
from dask_jobqueue import HTCondorCluster
from distributed import Client
import dask.array as da

cluster = HTCondorCluster(
    cores=1,
    processes=1,
    memory="512MB",
    disk="100MB",
    interface="lo",
    scheduler_options={"dashboard_address": "127.0.0.1:0"},
    log_directory=sys.argv[1],
    python=sys.executable,
)
out = {"job_script": cluster.job_script()}
with Client(cluster) as client:
    t1 = time.monotonic()
    cluster.scale(2)
    client.wait_for_workers(2, timeout=90)
    t2 = time.monotonic()
    out["workers"] = sorted(client.scheduler_info()["workers"])
    scratch = client.run(lambda: os.environ.get("_CONDOR_SCRATCH_DIR", ""))
    out["scratch"] = sorted(scratch.values())
    out["sum"] = client.submit(sum, range(100)).result()
    out["array_sum"] = int(da.ones((1000, 1000), chunks=(250, 1000)).sum().compute())
    t3 = time.monotonic()
cluster.close()
t4 = time.monotonic()
out["seconds"] = {"cluster": t1 - t0, "workers": t2 - t1, "compute": t3 - t2, "close": t4 - t3}
print(json.dumps(out))
"""


def test_dask_jobqueue_cluster(pool: HTCondorPool, job_python: Path) -> None:
    folder = user_folder(pool, "dask")
    logs = user_folder(pool, "dask/logs")
    (folder / "driver.py").write_text(DRIVER)
    began = time.monotonic()
    done = pool.run([job_python, "driver.py", logs], timeout=240, cwd=folder)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr[-4000:]}{pool.logs()}"
    out = json.loads(done.stdout.splitlines()[-1])
    seconds = {k: round(v, 1) for k, v in out["seconds"].items()}
    print(f"[htcondor] dask {time.monotonic() - began:.1f}s in all: {seconds}")
    assert len(out["workers"]) == 2
    assert all(w.startswith("tcp://127.0.0.1:") for w in out["workers"])
    assert all(str(pool.local_dir / "execute") in s for s in out["scratch"]), out["scratch"]
    assert out["sum"] == 4950
    assert out["array_sum"] == 1_000_000
    print(f"[htcondor] queue empty {wait_empty(pool, timeout=30):.1f}s after cluster.close()")
    # and the workers' processes are gone with their jobs: only the daemons are left
    deadline = time.monotonic() + 15
    while workers := [p for p in pool.processes() if not p.info["name"].startswith("condor_")]:
        assert time.monotonic() < deadline, [p.cmdline() for p in workers]
        time.sleep(0.2)


def test_stop_kills_running_jobs() -> None:
    """stop() leaves no process behind, even with a job still running."""
    installed()
    with HTCondorPool(cpus=2) as pool:
        folder = user_folder(pool, "long")
        (folder / "job.sub").write_text(
            "executable = /bin/sh\narguments = \"-c 'echo started; exec sleep 600'\"\n"
            "output = out.txt\nlog = job.log\nstream_output = true\nqueue\n"
        )
        assert pool.run([pool.condor_submit, "job.sub"], cwd=folder).returncode == 0
        deadline = time.monotonic() + 30
        while not any(p.info["name"] == "sleep" for p in pool.processes()):
            assert time.monotonic() < deadline, pool.logs()
            time.sleep(0.2)
        began = time.monotonic()
        left = pool.processes()
        pool.stop()
        assert pool.dir is None
        print(f"\n[htcondor] stop with a running job {time.monotonic() - began:.1f}s")
    assert all(not p.is_running() for p in left)
