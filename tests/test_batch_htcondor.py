"""`daskstep run --backend htcondor` against a real personal HTCondor pool (tests/htcondor.py).
As on a real submit node, daskstep runs as an ordinary user (the pool's, `nobody`), from a
Python that user can read; its workers are HTCondor jobs submitted by dask-jobqueue."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require, wait_for, write_workflow
from htcondor import POOL_GID, POOL_UID, HTCondorPool, ensure_installed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENT = (
    'python -c "import os; from distributed import Client; '
    "c = Client(os.environ['DASK_SCHEDULER_URI']); "
    "print('workers', len(c.scheduler_info()['workers'])); "
    "print('result', c.submit(sum, range(1000)).result())\""
)


@pytest.fixture(scope="module")
def pool() -> Iterator[HTCondorPool]:
    require(os.geteuid() == 0, "the HTCondor pool runs as nobody, started by root (setpriv)")
    try:
        ensure_installed()
    except Exception as exc:
        require(False, f"HTCondor could not be installed: {exc}")
    with HTCondorPool() as running:
        yield running


def workspace(pool: HTCondorPool, name: str) -> Path:
    folder = pool.home / name
    folder.mkdir()
    os.chown(folder, POOL_UID, POOL_GID)
    return folder


def as_user(pool: HTCondorPool, argv: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        pool.user_argv(argv), cwd=cwd, env=pool.env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def queued(pool: HTCondorPool, run_id: str) -> list[str]:
    done = pool.run([pool.condor_q, "-allusers", "-af", "GlobalJobId", "-constraint",
                     f'DaskstepRun == "{run_id}"'])  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def status(folder: Path) -> dict:
    return json.loads((folder / ".daskstep" / "status.json").read_text())


def test_two_workers_as_htcondor_jobs(pool: HTCondorPool, daskstep_bin: Path) -> None:
    folder = workspace(pool, "two-workers")
    reana = write_workflow(folder, [("compute", [CLIENT])], workers=2, memory="512Mi")
    os.chown(reana, POOL_UID, POOL_GID)
    proc = as_user(pool, [str(daskstep_bin), "run", str(reana), "--backend", "htcondor"], folder)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"{err}{pool.logs()}"
    assert "workers 2" in out and "result 499500" in out
    cluster = status(folder)["cluster"]
    assert sorted(cluster["worker_jobs"]) == ["worker-0", "worker-1"]
    assert all(j.endswith(".0") for j in cluster["worker_jobs"].values())
    assert queued(pool, cluster["run"]) == [], "jobs of the run left in the queue"
    worker_log = folder / ".daskstep" / "runs" / "1" / "raw" / "workers" / "worker-1.log"
    assert "Start worker at" in worker_log.read_text()


def _step_running(folder: Path) -> bool:
    try:
        return status(folder)["steps"][0]["status"] == "running"
    except (OSError, ValueError, KeyError):
        return False


def test_an_htcondorcern_step_is_an_htcondor_job(pool: HTCondorPool, daskstep_bin: Path) -> None:
    folder = workspace(pool, "step")
    reana = write_workflow(
        folder, [("there", ["echo cluster=$$_CONDOR_JOB_AD", CLIENT, "exit 3"])], workers=1,
        memory="512Mi",
    )  # fmt: skip
    reana.write_text(
        reana.read_text().replace(
            "  - name: there\n", "  - name: there\n        compute_backend: htcondorcern\n"
        )
    )
    proc = as_user(pool, [str(daskstep_bin), "run", str(reana), "--backend", "htcondor"], folder)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 3, f"{err}{pool.logs()}"
    step = status(folder)["steps"][0]
    assert step["compute_backend"] == "htcondorcern" and step["job_id"].endswith(".0")
    assert "cluster=" in out and ".job.ad" in out  # it ran inside an HTCondor job
    assert "result 499500" in out
    assert queued(pool, status(folder)["cluster"]["run"]) == []


def test_sigkill_of_the_controller_leaves_no_job(pool: HTCondorPool, daskstep_bin: Path) -> None:
    folder = workspace(pool, "killed")
    reana = write_workflow(folder, [("wait", ["sleep 120"])], workers=2, memory="512Mi")
    proc = as_user(pool, [str(daskstep_bin), "run", str(reana), "--backend", "htcondor"], folder)
    try:
        wait_for(lambda: _step_running(folder), 120, "the step to start")
        run_id = status(folder)["cluster"]["run"]
        assert len(queued(pool, run_id)) == 2
        proc.send_signal(signal.SIGKILL)  # setpriv and env exec: this is daskstep itself
        killed = time.monotonic()
        wait_for(lambda: not queued(pool, run_id), 60 + 10, "no job of the run")
        print(f"queue empty {time.monotonic() - killed:.1f} s after SIGKILL")
    finally:
        proc.kill()
        proc.communicate()


def test_adaptive_workers_are_htcondor_jobs_that_follow_the_work(
    pool: HTCondorPool, daskstep_bin: Path
) -> None:
    """--adapt on HTCondor: jobs submitted as the work grows and retired as it shrinks."""
    from test_adaptive_local import TWO_PHASES, followed

    folder = workspace(pool, "adaptive")
    (folder / "phases.py").write_text(TWO_PHASES)
    reana = write_workflow(folder, [("phases", ["python phases.py"])], workers=2, memory="512Mi")
    for path in (reana, folder / "phases.py"):
        os.chown(path, POOL_UID, POOL_GID)
    argv = [str(daskstep_bin), "run", str(reana), "--backend", "htcondor", "--adapt"]
    proc = as_user(pool, argv, folder)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{err}{pool.logs()}"
    phases = json.loads((folder / "phases.json").read_text())
    followed(folder, phases, err, fewest=0, most=2, rise_within=15.0)  # a job per look
    assert queued(pool, status(folder)["cluster"]["run"]) == [], "jobs of the run left"
