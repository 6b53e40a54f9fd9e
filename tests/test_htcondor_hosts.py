"""`daskstep run --backend htcondor` on an HTCondor pool across hosts of the tests' own
(condor_farm.py): the central manager, the schedd, the scheduler and the steps on `ctl`, the
worker jobs on the execute nodes `n1` and `n2`. No `scheduler_host` is given: the scheduler
must listen where the execute nodes reach it (found through COLLECTOR_HOST), with the run's TLS.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from condor_farm import HTCondorFarm
from conftest import wait_for, write_workflow
from htcondor import POOL_GID, POOL_UID
from test_batch_htcondor import (  # the one-host pool's helpers: the farm is a pool too
    _step_running,
    as_user,
    queued,
    status,
    workspace,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# where the workers are (their addresses), and where this step runs (its job ad, if any)
WHERE = (
    'python -c "import os, re; from distributed import Client; '
    "c = Client(os.environ['DASK_SCHEDULER_URI']); "
    "ws = c.scheduler_info()['workers']; "
    "print('workers', sorted(w.split('//')[1].split(':')[0] for w in ws)); "
    "ad = open(os.environ['_CONDOR_JOB_AD']).read() if '_CONDOR_JOB_AD' in os.environ else ''; "
    "host = re.search(r'RemoteHost = \\\"[^@]*@([^\\\"]*)', ad); "
    "print('result', c.submit(sum, range(1000)).result(), "
    "'from', host.group(1) if host else 'ctl', 'via', os.environ['DASK_SCHEDULER_URI'])\""
)


def run(farm: HTCondorFarm, daskstep_bin: Path, folder: Path) -> subprocess.Popen:
    """`daskstep run` of the folder's reana.yaml, as the pool's user on the submit node."""
    for path in folder.iterdir():
        os.chown(path, POOL_UID, POOL_GID)
    argv = [str(daskstep_bin), "run", str(folder / "reana.yaml"), "--backend", "htcondor"]
    return as_user(farm, argv, folder)  # farm.user_argv: on `ctl`


def test_workers_on_two_execute_hosts_reach_the_scheduler_without_a_scheduler_host(
    condor_farm: HTCondorFarm, daskstep_bin: Path
) -> None:
    folder = workspace(condor_farm, "two-hosts")
    reana = write_workflow(folder, [("here", [WHERE]), ("there", [WHERE])], workers=2,
                           memory="512Mi")  # fmt: skip
    there = "  - name: there\n        compute_backend: htcondorcern\n"
    reana.write_text(reana.read_text().replace("  - name: there\n", there))
    proc = run(condor_farm, daskstep_bin, folder)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, f"{err}{condor_farm.logs()}"
    ctl = condor_farm.hosts.addresses["ctl"]
    n1, n2 = (condor_farm.hosts.addresses[h] for h in ("n1", "n2"))
    assert f"the scheduler listens on {ctl} (e0), where this host reaches the HTCondor " \
        f"collector at {ctl}:9618" in err, err  # fmt: skip
    assert out.count(f"workers ['{n1}', '{n2}']") == 2, out  # a worker on each execute host
    assert f"result 499500 from ctl via tls://{ctl}:" in out  # the step on the submit node
    there = [line for line in out.splitlines() if re.match(r"result 499500 from n\d", line)]
    assert len(there) == 1 and f"via tls://{ctl}:" in there[0], out  # the htcondorcern job
    doc = status(folder)
    assert queued(condor_farm, doc["cluster"]["run"]) == []
    for name in doc["cluster"]["worker_jobs"]:  # each worker's log came back from its host
        logs = subprocess.run(
            condor_farm.user_argv([str(daskstep_bin), "logs", "--workspace", str(folder),
                                   "--worker", name]),
            env=condor_farm.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert logs.returncode == 0, logs.stderr
        assert re.search(r"Start worker at: +tls://10\.213\.0\.[23]:", logs.stdout), logs.stdout
        assert re.search(rf"Registered to: +tls://{re.escape(ctl)}:", logs.stdout)


def test_sigkill_of_the_controller_empties_the_queue_on_every_host(
    condor_farm: HTCondorFarm, daskstep_bin: Path
) -> None:
    folder = workspace(condor_farm, "killed")
    write_workflow(folder, [("wait", ["sleep 120"])], workers=2, memory="512Mi")
    proc = run(condor_farm, daskstep_bin, folder)
    try:
        wait_for(lambda: _step_running(folder), 120, "the step to start")
        run_id = status(folder)["cluster"]["run"]
        assert len(queued(condor_farm, run_id)) == 2
        proc.send_signal(signal.SIGKILL)  # nsenter, setpriv and env exec: daskstep itself
        killed = time.monotonic()
        wait_for(lambda: not queued(condor_farm, run_id), 15, "no job of the run")
        print(f"queue empty {time.monotonic() - killed:.1f} s after SIGKILL")
    finally:
        proc.kill()
        proc.communicate()


def test_a_removed_worker_job_is_reported_with_its_execute_host(
    condor_farm: HTCondorFarm, daskstep_bin: Path
) -> None:
    folder = workspace(condor_farm, "removed")
    write_workflow(folder, [("wait", ["sleep 15"])], workers=2, memory="512Mi")
    proc = run(condor_farm, daskstep_bin, folder)
    try:
        wait_for(lambda: _step_running(folder), 120, "the step to start")
        job_id = status(folder)["cluster"]["worker_jobs"]["worker-0"]
        where = condor_farm.run([condor_farm.condor_q, job_id, "-af", "RemoteHost"]).stdout
        assert condor_farm.run([condor_farm.condor_rm, job_id]).returncode == 0
        wait_for(lambda: status(folder).get("events"), 10, "the removed worker to be reported")
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    [event] = status(folder)["events"]
    assert event["what"] == f"its htcondor job {job_id} ended", event
    assert event["why"].endswith(f"; it ran on {where.strip().rpartition('@')[2]}"), event
    assert re.search(r"; it ran on n[12]$", event["why"]), event
    assert proc.returncode == 0, err
    assert queued(condor_farm, status(folder)["cluster"]["run"]) == []


def test_an_execute_host_cut_off_mid_step_is_survived(
    condor_farm: HTCondorFarm, daskstep_bin: Path
) -> None:
    from test_slurm_hosts import CUT_SECONDS, CUT_STEP

    folder = workspace(condor_farm, "cut")
    (folder / "cut.py").write_text(CUT_STEP)
    # Two of these do not fit in one host's 2000 MB, so there is one worker on each host. With
    # 512Mi both once landed on n1 (in one CI run): the negotiator's spreading is a
    # preference, and a claim an earlier test's job left can be reused without it.
    write_workflow(folder, [("cut", ["python cut.py"])], workers=2, memory="1200Mi")
    proc = run(condor_farm, daskstep_bin, folder)
    try:
        wait_for(lambda: _step_running(folder), 120, "the step to start")
        time.sleep(3)
        jobs = status(folder)["cluster"]["worker_jobs"]
        hosts = {name: condor_farm.run([condor_farm.condor_q, job, "-af", "RemoteHost"]).stdout
                 for name, job in jobs.items()}  # fmt: skip
        on_n2 = [name for name, host in hosts.items() if host.strip().endswith("@n2")]
        assert len(on_n2) == 1, f"not one worker on each host: {hosts}"
        [lost] = on_n2
        condor_farm.hosts.cut("n2")
        cut = time.monotonic()
        try:
            time.sleep(CUT_SECONDS)  # past the worker's TCP timeout: see test_slurm_hosts
        finally:
            condor_farm.hosts.restore("n2")
        out, err = proc.communicate(timeout=240)
        print(f"run ended {time.monotonic() - cut:.1f} s after the cut")
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert f"result {sum(range(70))}" in out
    # the host came back half a minute before the step's end: its worker did not, nor another
    assert f"workers [('{next(n for n in jobs if n != lost)}', " in out, out
    events = status(folder)["events"]
    [event] = [e for e in events if e["component"] == lost]  # one, naming the job and its host
    # and, with the step going on 1 of 2 for more than 30 s, the watch's warning at most
    assert all(e["what"] == "too few workers" for e in events if e is not event), events
    assert event["what"] == f"its htcondor job {jobs[lost]} ended", event
    assert event["why"].endswith("; it ran on n2"), event
    assert queued(condor_farm, status(folder)["cluster"]["run"]) == []
