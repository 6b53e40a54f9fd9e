"""`daskstep run --backend docker` on a real engine: the analysis' own Dask image (distributed
2023.3.2 on Python 3.9) for the scheduler, the workers and the steps."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from importlib.metadata import version
from pathlib import Path

import psutil
import pytest
from conftest import daskstep, script, wait_for
from dockerd import OLD_DASK, Engine, dask_image

from daskstep.docker.containers import listed

pytestmark = [pytest.mark.integration, pytest.mark.slow]

JOB = script(
    """
    import os, sys
    from distributed import Client

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    workers = client.scheduler_info()["workers"]
    print("workers:", len(workers), "python:", sys.version.split()[0])
    total = client.submit(sum, client.map(lambda x: x * x, range(100))).result()
    open("result.txt", "w").write(f"{total}\\n")
    """
)


def workflow(folder: Path, image: str, steps: list[tuple[str, str, list[str]]], **dask) -> Path:
    """steps: (name, image, commands)."""
    dask = {"image": image, "number_of_workers": 3, "single_worker_memory": "512Mi",
            "single_worker_threads": 1, **dask}  # fmt: skip
    document = {
        "workflow": {
            "type": "serial",
            "resources": {"dask": dask},
            "specification": {
                "steps": [{"name": n, "environment": i, "commands": c} for n, i, c in steps]
            },
        }
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reana.yaml").write_text(json.dumps(document))
    return folder / "reana.yaml"


def containers(engine: Engine) -> list[dict]:
    """One list call (no inspect per container, which would race with their removal)."""
    return listed(engine.client, "daskstep.run")


@pytest.fixture(scope="module")
def old_image(docker_engine: Engine) -> str:
    return dask_image(docker_engine, OLD_DASK, "bullseye")


def test_two_steps_on_three_worker_containers(docker_engine: Engine, old_image: str, tmp_path):
    (tmp_path / "job.py").write_text(JOB)
    spec = workflow(
        tmp_path,
        old_image,
        [("compute", old_image, ["python3 job.py"]), ("check", old_image, ["cat result.txt"])],
    )
    t = time.monotonic()
    run = daskstep("run", str(spec), "--backend", "docker")
    out, err = run.communicate(timeout=300)
    took = time.monotonic() - t
    assert run.returncode == 0, err
    assert "workers: 3 python: 3.9" in out and "328350" in out
    state = tmp_path / ".daskstep"
    status = json.loads((state / "status.json").read_text())
    assert status["cluster"]["backend"] == "docker" and status["cluster"]["workers_ready"] == 3
    assert [s["exit_code"] for s in status["steps"]] == [0, 0]
    logs = state / "logs"
    assert "workers: 3" in (logs / "job.log").read_text()
    assert "Scheduler at:" in (logs / "scheduler.log").read_text()
    names = sorted(p.name for p in (logs / "workers").glob("*.log"))
    assert names == ["worker-0.log", "worker-1.log", "worker-2.log"]
    assert "End worker" in (logs / "workers" / "worker-2.log").read_text()  # to the last line
    assert containers(docker_engine) == []
    print(f"two-step workflow on docker: {took:.1f} s")


def test_a_failing_step_gives_its_code(docker_engine: Engine, old_image: str, tmp_path) -> None:
    spec = workflow(
        tmp_path, old_image, [("fails", old_image, ["exit 7"]), ("never", old_image, ["true"])]
    )
    run = daskstep("run", str(spec), "--backend", "docker")
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 7, err
    status = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert [s["status"] for s in status["steps"]] == ["failed", "skipped"]
    assert containers(docker_engine) == []


def test_a_newer_step_image_is_refused_before_anything_starts(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    newest = dask_image(docker_engine, version("distributed"), "bookworm")
    spec = workflow(tmp_path, old_image, [("new", newest, ["echo ran"])])
    run = daskstep("run", str(spec), "--backend", "docker")
    _out, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    lines = err.splitlines()
    assert all(ln.startswith("error: ") for ln in lines) and "Traceback" not in err
    distributed = next(ln for ln in lines if "distributed" in ln)
    assert version("distributed") in distributed and OLD_DASK in distributed
    assert "steps[0].environment" in distributed and "--allow-version-mismatch" in distributed
    assert not (tmp_path / ".daskstep" / "status.json").exists()

    run = daskstep("run", str(spec), "--backend", "docker", "--allow-version-mismatch")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert "ran" in out and "warning: workflow.specification.steps[0].environment" in err
    assert "version mismatch" in out or "cannot compare versions" in out  # the entrypoint's


def test_a_missing_image_is_one_line(docker_engine: Engine, tmp_path: Path) -> None:
    spec = workflow(tmp_path, "nowhere/dask:0", [("s", "nowhere/dask:0", ["true"])])
    run = daskstep("run", str(spec), "--backend", "docker")
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 2, err
    lines = err.splitlines()  # one per field that names it
    assert lines[0].startswith("error: workflow.resources.dask.image: image nowhere/dask:0 is")
    assert lines[1].startswith("error: workflow.specification.steps[0].environment: image")
    assert len(lines) == 2 and "docker pull nowhere/dask:0" in lines[0]


OOM = script(
    """
    import os
    from distributed import Client

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    try:
        client.submit(lambda: len(bytearray(800 * 2**20)), retries=0).result(timeout=60)
    except Exception as e:
        print("the task failed:", type(e).__name__)
    """
)


def test_a_worker_killed_for_memory_is_reported(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    (tmp_path / "oom.py").write_text(OOM)
    spec = workflow(
        tmp_path,
        old_image,
        [("greedy", old_image, ["python3 oom.py"])],
        number_of_workers=1,
        single_worker_memory="256Mi",
    )
    run = daskstep("run", str(spec), "--backend", "docker")
    _out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    events = json.loads((tmp_path / ".daskstep" / "status.json").read_text()).get("events", [])
    # the watch may see the worker pause for memory on its way; the scheduler retries the task
    # on the restarted worker, which is killed again; the die after each kill is not said again
    events = [e for e in events if e["what"] != "paused for memory"]
    assert events and {e["what"] for e in events} == {"killed for memory (OOM)"}, events
    assert events[0]["component"] == "worker worker-0"
    assert events[0]["why"] == (
        "the engine killed it at its memory limit of 256Mi (OOMKilled); the engine restarts it"
    )
    line = "worker worker-0: killed for memory (OOM)"  # the local and Kubernetes backends' words
    assert line in err and line in (tmp_path / ".daskstep/logs/job.log").read_text()


KILLER = script(
    """
    import os, time
    from distributed import Client

    def die():
        os.kill(os.getpid(), 9)

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    open("killed", "w").write(str(time.time()))
    client.submit(die, pure=False)
    time.sleep(4)
    print("workers", len(client.scheduler_info()["workers"]))
    """
)


def test_a_worker_that_dies_is_reported_and_comes_back(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    (tmp_path / "killer.py").write_text(KILLER)
    spec = workflow(
        tmp_path, old_image, [("kill", old_image, ["python3 killer.py"])], number_of_workers=1
    )
    run = daskstep("run", str(spec), "--backend", "docker")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    events = json.loads((tmp_path / ".daskstep" / "status.json").read_text()).get("events", [])
    lost = [e for e in events if e["what"] == "lost"]
    assert lost and lost[0]["component"] == "worker worker-0", events
    assert lost[0]["why"] == "it exited with 137; the engine restarts it"
    reported = datetime.fromisoformat(lost[0]["time"]).timestamp()
    assert reported - float((tmp_path / "killed").read_text()) < 5, "reported too late"
    assert "warning: worker worker-0: lost: it exited with 137" in err
    assert "workers 1" in out  # back under the restart policy


def test_sigkill_of_the_controller_leaves_no_container(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    spec = workflow(tmp_path, old_image, [("long", old_image, ["touch started; sleep 300"])])
    run = daskstep("run", str(spec), "--backend", "docker")
    wait_for(lambda: (tmp_path / "started").exists(), 120, "the step to start")
    assert len(containers(docker_engine)) == 5  # scheduler, 3 workers, the step
    run.send_signal(signal.SIGKILL)
    run.communicate()
    t = time.monotonic()
    wait_for(lambda: containers(docker_engine) == [], 15, "the reaper to remove the containers")
    print(f"no container left {time.monotonic() - t:.1f} s after SIGKILL")


def test_gc_removes_what_a_dead_run_left(docker_engine: Engine, old_image: str, tmp_path):
    spec = workflow(tmp_path, old_image, [("long", old_image, ["touch started; sleep 300"])])
    run = daskstep("run", str(spec), "--backend", "docker")
    wait_for(lambda: (tmp_path / "started").exists(), 120, "the step to start")
    # the run's reapers only (another test's run may be going on beside this one)
    reapers = [
        p.pid
        for p in psutil.Process(run.pid).children()
        if "daskstep sidecar reaper" in " ".join(p.cmdline())
    ]
    mark = f"{os.uname().nodename}:{run.pid}"
    [private] = [  # its TLS keys: no reaper will remove them now
        f for f in Path(tempfile.gettempdir()).glob("daskstep-credentials-*")
        if (f / "controller").exists() and (f / "controller").read_text() == mark
    ]  # fmt: skip
    for pid in [*reapers, run.pid]:  # the reapers first: one alive at the run's end cleans
        os.kill(pid, signal.SIGKILL)
    run.communicate()
    left = containers(docker_engine)
    assert left and private.exists()
    done = subprocess.run(
        [sys.executable, "-m", "daskstep", "gc"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "removed" in done.stdout and containers(docker_engine) == []
    assert f"removed {private}: the private folder of a run whose controller is gone" in done.stdout
    assert not private.exists()


CREDENTIALS = script(
    """
    import os
    from distributed import Client

    def ticket():
        path = os.environ["KRB5CCNAME"][len("FILE:"):]  # Python 3.9: no removeprefix
        with open(path, "rb") as f:
            head = f.read(2)
        return path, head.hex(), os.access(path, os.W_OK)

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    for worker, (path, head, writable) in sorted(client.run(ticket).items()):
        print("worker reads", path, head, "writable" if writable else "read-only")
    print("step reads", ticket()[0], ticket()[1])
    """
)


def test_workers_and_steps_read_the_ticket_through_a_read_only_mount(
    docker_engine: Engine, old_image: str, kdc, tmp_path: Path
) -> None:
    from test_run_credentials import base_env, kerberos_secrets

    secrets, _ = kerberos_secrets(kdc, tmp_path, "container")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "creds.py").write_text(
        CREDENTIALS.replace("removeprefix", "replace").replace(
            '.replace("FILE:")', '.replace("FILE:", "")'
        )
    )  # the image's Python is 3.9
    spec = workflow(ws, old_image, [("creds", old_image, ["python3 creds.py"])],
                    number_of_workers=2)  # fmt: skip
    document = json.loads(spec.read_text())
    document["workflow"]["resources"]["kerberos"] = True
    spec.write_text(json.dumps(document))
    run = daskstep(
        "run", str(spec), "--backend", "docker", "--secrets", str(secrets),
        env=base_env(KRB5_CONFIG=kdc.krb5_config, DOCKER_HOST=docker_engine.host),
    )  # fmt: skip
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    reads = [ln for ln in out.splitlines() if ln.startswith("worker reads")]
    assert len(reads) == 2, out
    assert all(" 0504 " in ln and ln.endswith("read-only") for ln in reads), reads  # ccache v4
    assert "step reads" in out and "/krb5cc 0504" in out
    assert containers(docker_engine) == []


def test_tls_takes_only_the_runs_own_clients_on_the_old_image(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    """distributed 2023.3.2's `Client(uri)` in the step's image works unchanged; a plain
    client and a TLS client without the run's certificate are refused."""
    from test_tls import PROBE, probe

    (tmp_path / "probe.py").write_text(PROBE)
    spec = workflow(
        tmp_path, old_image, [("probe", old_image, ["python3 probe.py"])], number_of_workers=1
    )
    run = daskstep("run", str(spec), "--backend", "docker")
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    seen = probe(out)
    assert seen["uri"].startswith("tls://") and seen["sum"] == 6
    assert seen["plain"] and seen["no_cert"], seen
    assert "lost" not in err  # a step's own end is no cluster event


KILL_SCHEDULER = script(
    """
    import os, signal, time
    from distributed import Client

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    open("killed", "w").write(str(time.time()))
    try:
        client.run_on_scheduler(lambda: os.kill(os.getpid(), signal.SIGKILL))
    except Exception:
        pass
    time.sleep(120)
    """
)


def test_losing_the_scheduler_container_fails_the_run_at_once(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    (tmp_path / "kill.py").write_text(KILL_SCHEDULER)
    steps = [("kill", old_image, ["python3 kill.py"]), ("next", old_image, ["echo next"])]
    spec = workflow(tmp_path, old_image, steps, number_of_workers=1)
    run = daskstep("run", str(spec), "--backend", "docker")
    _, err = run.communicate(timeout=300)
    ended = time.time()
    assert run.returncode == 71, err
    took = ended - float((tmp_path / "killed").read_text())
    print(f"the run ended {took:.1f} s after the scheduler was killed")
    assert took < 10, "the run went on too long"
    doc = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert doc["reason"] == "SchedulerLost" and "the scheduler container exited" in doc["message"]
    assert [s["status"] for s in doc["steps"]][1] == "skipped"
    assert any(e["component"] == "scheduler" and e["what"] == "lost" for e in doc["events"])
    assert containers(docker_engine) == [], "containers of the run left"


def test_adaptive_workers_are_containers_that_follow_the_work(
    docker_engine: Engine, old_image: str, tmp_path: Path
) -> None:
    """--adapt on Docker, with an older distributed in the image than daskstep's: the scheduler
    is asked over its HTTP API how many workers it wants, and to retire them (their data
    moves first); a retired worker's container stops and the engine does not restart it."""
    from test_adaptive_local import TWO_PHASES, followed

    (tmp_path / "phases.py").write_text(TWO_PHASES)
    spec = workflow(tmp_path, old_image, [("phases", old_image, ["python3 phases.py"])])
    run = daskstep("run", str(spec), "--backend", "docker", "--adapt")
    _, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    phases = json.loads((tmp_path / "phases.json").read_text())
    followed(tmp_path, phases, err, fewest=1, most=3, rise_within=10.0)
    doc = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert not [e for e in doc["events"] if e["what"] in ("lost", "killed for memory (OOM)")]
    assert containers(docker_engine) == []
