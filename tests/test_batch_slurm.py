"""`daskstep run --backend slurm` against a real one-node Slurm (tests/slurm.py): the workers are
Slurm jobs submitted by dask-jobqueue, a `compute_backend: slurmcern` step is a Slurm job too,
and whatever happens, no job of the run is left in the queue."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import daskstep, require, wait_for, write_workflow
from slurm import Slurm

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLIENT = (
    'python -c "import os, json; from distributed import Client; '
    "c = Client(os.environ['DASK_SCHEDULER_URI']); "
    "print('workers', len(c.scheduler_info()['workers'])); "
    "r = c.submit(sum, range(1000)).result(); print('result', r); "
    "open('result.json', 'w').write(json.dumps(r))\""
)


def run(slurm: Slurm, reana: Path, *args: str, timeout: float = 120) -> tuple[int, str, str]:
    proc = daskstep("run", str(reana), "--backend", "slurm", *args, env={**os.environ, **slurm.env})
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def status(workspace: Path) -> dict:
    return json.loads((workspace / ".daskstep" / "status.json").read_text())


def site(folder: Path, text: str) -> str:
    path = folder / "site.yaml"
    path.write_text(text)
    return str(path)


def test_two_steps_on_three_slurm_workers(slurm: Slurm, tmp_path: Path) -> None:
    reana = write_workflow(
        tmp_path,
        [("compute", [CLIENT]), ("check", ["python -c \"import json; "
          "assert json.load(open('result.json')) == 499500; print('checked')\""])],
        workers=3, memory="512Mi",
    )  # fmt: skip
    code, out, err = run(slurm, reana)
    assert code == 0, err
    assert "workers 3" in out and "result 499500" in out and "checked" in out
    doc = status(tmp_path)
    run_id, jobs = doc["cluster"]["run"], doc["cluster"]["worker_jobs"]
    assert sorted(jobs) == ["worker-0", "worker-1", "worker-2"]
    assert all(job_id.isdigit() for job_id in jobs.values())
    assert slurm.jobs_of_run(run_id) == [], "jobs of the run left in the queue"
    # each job asked Slurm for the worker's memory and threads, and its worker has them
    job = slurm.run("scontrol", "-o", "show", "job", jobs["worker-2"])
    assert f"JobName={run_id} " in job and "MinMemoryNode=512M" in job and "NumCPUs=1 " in job
    assert "Comment=daskstep-controller=" in job
    # each worker's job output is that worker's log in the store
    logs = daskstep("logs", "--workspace", str(tmp_path), "--worker", "worker-2")
    text, _ = logs.communicate(timeout=30)
    assert "Start worker at" in text
    assert re.search(r"Threads: +1\n", text) and re.search(r"Memory: +512.00 MiB\n", text)


def test_a_slurmcern_step_is_a_slurm_job_and_its_exit_code_is_the_runs(
    slurm: Slurm, tmp_path: Path
) -> None:
    reana = write_workflow(
        tmp_path,
        [("here", [CLIENT]), ("there", ["echo job=$$SLURM_JOB_ID", CLIENT, "exit 3"]),
         ("never", ["echo never"])],
        workers=2, memory="512Mi",
    )  # fmt: skip
    text = reana.read_text().replace(
        "  - name: there\n", "  - name: there\n        compute_backend: slurmcern\n"
    )
    reana.write_text(text)
    code, out, err = run(slurm, reana)
    assert code == 3, err
    steps = status(tmp_path)["steps"]
    assert steps[0]["status"] == "finished" and "job_id" not in steps[0]
    assert steps[1]["status"] == "failed" and steps[1]["exit_code"] == 3
    assert steps[1]["compute_backend"] == "slurmcern"
    assert f"job={steps[1]['job_id']}" in out  # it ran inside that very Slurm job
    assert out.count("result 499500") == 2  # and reached the cluster from there
    assert steps[2]["status"] == "skipped"
    assert slurm.jobs_of_run(status(tmp_path)["cluster"]["run"]) == []


def test_a_worker_job_cancelled_mid_step_is_reported(slurm: Slurm, tmp_path: Path) -> None:
    reana = write_workflow(tmp_path, [("wait", ["sleep 12"])], workers=2, memory="512Mi")
    proc = daskstep("run", str(reana), "--backend", "slurm", env={**os.environ, **slurm.env})
    try:
        wait_for(lambda: _step_running(tmp_path), 60, "the step to start")
        job_id = status(tmp_path)["cluster"]["worker_jobs"]["worker-1"]
        slurm.run("scancel", job_id)
        cancelled = time.monotonic()
        wait_for(lambda: status(tmp_path).get("events"), 10, "the lost worker to be reported")
        seconds = time.monotonic() - cancelled
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    event = status(tmp_path)["events"][0]
    assert event["component"] == "worker-1"
    assert job_id in event["what"] and "CANCELLED" in event["why"], event
    assert f"worker-1: its slurm job {job_id} ended: slurm says CANCELLED" in err
    job_log = (tmp_path / ".daskstep" / "runs" / "1" / "raw" / "job.log").read_text()
    assert f"slurm job {job_id} ended" in job_log
    assert proc.returncode == 0  # one worker is left: the step goes on
    print(f"reported {seconds:.1f} s after scancel")


def _step_running(workspace: Path) -> bool:
    try:
        return status(workspace)["steps"][0]["status"] == "running"
    except (OSError, ValueError, KeyError):
        return False


def test_sigkill_of_the_controller_leaves_no_job(slurm: Slurm, tmp_path: Path) -> None:
    reana = write_workflow(tmp_path, [("wait", ["sleep 120"])], workers=3, memory="512Mi")
    death_timeout = 15
    settings = site(tmp_path, f"death_timeout: {death_timeout}\n")
    proc = daskstep(
        "run", str(reana), "--backend", "slurm", "--site", settings,
        env={**os.environ, **slurm.env},
    )  # fmt: skip
    try:
        wait_for(lambda: _step_running(tmp_path), 60, "the step to start")
        run_id = status(tmp_path)["cluster"]["run"]
        assert len(slurm.jobs_of_run(run_id)) == 3
        proc.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        wait_for(lambda: not slurm.jobs_of_run(run_id), death_timeout + 10, "no job of the run")
        print(f"queue empty {time.monotonic() - killed:.1f} s after SIGKILL")
    finally:
        proc.kill()
        proc.communicate()


def test_a_worker_job_that_cannot_start_is_named_on_timeout(slurm: Slurm, tmp_path: Path) -> None:
    reana = write_workflow(tmp_path, [("never", ["echo never"])], workers=2, memory="512Mi")
    settings = site(tmp_path, "extra_directives: ['--begin=now+3600']\n")
    code, _, err = run(slurm, reana, "--site", settings, "--start-timeout", "3")
    assert code == 75, err
    line = next(x for x in err.splitlines() if x.startswith("error:"))
    assert "only 0 of 2 workers" in line and "(job " in line and "PENDING: BeginTime" in line
    assert slurm.jobs_of_run(status(tmp_path)["cluster"]["run"]) == []


def test_a_refused_worker_job_fails_the_start_in_slurms_words(slurm: Slurm, tmp_path: Path) -> None:
    reana = write_workflow(tmp_path, [("never", ["echo never"])], workers=2, memory="512Mi")
    code, _, err = run(slurm, reana, "--site", site(tmp_path, "partition: nosuch\n"))
    assert code == 69, err
    assert "a worker job was refused" in err and "invalid partition" in err.lower(), err
    assert "Traceback" not in err


def test_ctrl_c_mid_step_is_a_cancelled_run_exit_130(slurm: Slurm, tmp_path: Path) -> None:
    """dask-jobqueue's import took SIGINT for its own `sys.exit()`: the run exited 0 in the
    middle of its teardown, and a SIGINT to `daskstep run` alone was lost."""
    reana = write_workflow(tmp_path, [("wait", ["sleep 120"])], workers=1, memory="512Mi")
    proc = daskstep("run", str(reana), "--backend", "slurm", env={**os.environ, **slurm.env})
    try:
        wait_for(lambda: _step_running(tmp_path), 60, "the step to start")
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    doc = status(tmp_path)
    assert (doc["status"], doc["exit_code"], doc["steps"][0]["status"]) == (
        "cancelled",
        130,
        "cancelled",
    )
    assert "cancelled by SIGINT" in err and (tmp_path / ".daskstep" / "report.html").is_file()
    assert slurm.jobs_of_run(doc["cluster"]["run"]) == []


def test_an_unconfigured_slurm_says_sbatch_s_own_words_first(tmp_path: Path) -> None:
    """Slurm's commands installed but not configured: the cause, then teardown's warnings."""
    require(shutil.which("sbatch") is not None, "sbatch not found (apt-get install slurm-wlm)")
    reana = write_workflow(tmp_path, [("never", ["echo never"])], workers=1, memory="512Mi")
    (tmp_path / "slurm.conf").write_text("")  # as a package leaves it (a missing one retries)
    env = {**os.environ, "SLURM_CONF": str(tmp_path / "slurm.conf")}
    proc = daskstep("run", str(reana), "--backend", "slurm", env=env)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 69, err
    first = next(x for x in err.splitlines() if x.startswith(("error:", "warning:")))
    assert first.startswith("error: a worker job was refused: ") and "sbatch" in first, err
    assert [x for x in err.splitlines() if x.startswith("error:")] == [first]  # said once
    doc = status(tmp_path)
    assert (doc["status"], doc["exit_code"], doc["reason"]) == ("failed", 69, "ClusterFailed")
    assert doc["steps"][0]["status"] == "skipped"
    assert "Traceback" not in err


def test_gc_cancels_the_jobs_of_runs_whose_controller_is_gone(slurm: Slurm) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    host = os.uname().nodename
    for run_id, pid in (("ds-gcdead0000", dead.pid), ("ds-gclive0000", os.getpid())):
        slurm.run("sbatch", f"--job-name={run_id}", f"--comment=daskstep-controller={host}:{pid}",
                  "--output=/dev/null", "--wrap", "sleep 300")  # fmt: skip
    slurm.run("sbatch", "--job-name=someone-else", "--output=/dev/null", "--wrap", "sleep 300")
    try:
        gc = daskstep("gc", "--backend", "slurm", env={**os.environ, **slurm.env})
        out, err = gc.communicate(timeout=60)
        assert gc.returncode == 0, err
        assert out.strip() == "ds-gcdead0000: cancelled 1 slurm job"
        wait_for(lambda: not slurm.jobs_of_run("ds-gcdead"), 15, "the dead run's job to go")
        assert slurm.jobs_of_run("ds-gclive") and slurm.jobs("someone-else")
    finally:
        slurm.run("scancel", "--name=ds-gclive0000,someone-else")


def test_adaptive_workers_are_slurm_jobs_that_follow_the_work(slurm: Slurm, tmp_path: Path) -> None:
    """--adapt on Slurm: no job while nothing waits (REANA's minimum 0), jobs up to the
    maximum with the wide phase, retired (their data moved) during the serial one."""
    from test_adaptive_local import followed, two_phases

    phases, err = two_phases(tmp_path, 3, "--backend", "slurm", env={**os.environ, **slurm.env})
    followed(tmp_path, phases, err, fewest=0, most=3, rise_within=10.0)
    doc = status(tmp_path)
    ups = [e["why"] for e in doc["events"] if e["what"].startswith("scaled up to")]
    assert ups[0].startswith("from 0; "), ups  # it started with no job
    assert sorted(doc["cluster"]["worker_jobs"]) == ["worker-0", "worker-1", "worker-2"]
    assert slurm.jobs_of_run(doc["cluster"]["run"]) == [], "jobs of the run left in the queue"
    assert not [e for e in doc["events"] if "job" in e["what"]], doc["events"]  # retired: no news
