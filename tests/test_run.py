"""`daskstep run` on the local backend, with real schedulers, workers, processes and signals."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import daskstep, descendants, script, wait_for, wait_gone, write_workflow

pytestmark = pytest.mark.integration

JOB = script(
    """
    import os, sys
    from distributed import Client

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    assert os.environ["DASK_SCHEDULER_ADDRESS"] == os.environ["DASK_SCHEDULER_URI"]
    workers = client.scheduler_info(n_workers=-1)["workers"]
    print("workers:", len(workers))
    print("memory:", sorted({w["memory_limit"] for w in workers.values()}))
    total = client.submit(sum, client.map(lambda x: x * x, range(100))).result()
    print("python:", sys.executable)
    open("result.txt", "w").write(f"{total}\\n")
    """
)


def test_two_steps_on_three_workers(tmp_path: Path) -> None:
    (tmp_path / "job.py").write_text(JOB)
    spec = write_workflow(
        tmp_path,
        [("compute", ["python job.py"]), ("check", ["cat result.txt", "echo done"])],
        workers=3,
        memory="512Mi",
    )
    run = daskstep("run", str(spec))
    out, err = run.communicate(timeout=180)
    assert run.returncode == 0, err
    assert "workers: 3" in out
    assert f"memory: [{512 * 2**20}]" in out
    assert "328350\ndone\n" in out
    state = tmp_path / ".daskstep"
    job_log = (state / "logs" / "job.log").read_text()
    assert "workers: 3" in job_log and "328350" in job_log
    assert "dashboard: http://127.0.0.1:" in err
    status = json.loads((state / "status.json").read_text())
    assert status["status"] == "finished" and status["exit_code"] == 0
    assert [(s["name"], s["exit_code"]) for s in status["steps"]] == [("compute", 0), ("check", 0)]
    assert status["cluster"]["workers_ready"] == 3
    assert "Scheduler at" in (state / "logs" / "scheduler.log").read_text()
    worker_logs = sorted(p.name for p in (state / "logs" / "workers").glob("*.log"))
    assert worker_logs == ["worker-0.log", "worker-1.log", "worker-2.log"]
    assert "Start worker at" in (state / "logs" / "workers" / "worker-1.log").read_text()


def test_failing_step_sets_exit_code_and_skips_the_rest(tmp_path: Path) -> None:
    spec = write_workflow(
        tmp_path, [("fails", ["echo before", "exit 3", "echo never"]), ("later", ["echo nope"])]
    )
    run = daskstep("run", str(spec))
    out, err = run.communicate(timeout=120)
    assert run.returncode == 3, err
    assert "before" in out and "never" not in out and "nope" not in out
    status = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert status["status"] == "failed" and status["exit_code"] == 3
    assert [s["status"] for s in status["steps"]] == ["failed", "skipped"]


def _start_long_run(tmp_path: Path, reaper: list[int]):
    spec = write_workflow(tmp_path, [("long", ["touch started; sleep 300"])], workers=2)
    run = daskstep("run", str(spec))
    reaper.append(run.pid)
    wait_for(lambda: (tmp_path / "started").exists(), 60, "the step to start")
    pids = descendants(run.pid)
    # the launcher, the scheduler, 2 workers, the entrypoint, sh and sleep
    assert len(pids) >= 7, pids
    return run, pids


def test_sigterm_mid_step_cancels_and_leaves_nothing(tmp_path: Path, reaper: list[int]) -> None:
    run, pids = _start_long_run(tmp_path, reaper)
    t = time.monotonic()
    run.send_signal(signal.SIGTERM)
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 143, err
    assert time.monotonic() - t < 15
    assert wait_gone(pids, 5) == set()
    status = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert status["status"] == "cancelled" and status["exit_code"] == 143
    assert status["steps"][0]["status"] == "cancelled"


def test_sigint_gives_130(tmp_path: Path, reaper: list[int]) -> None:
    run, pids = _start_long_run(tmp_path, reaper)
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=60)
    assert run.returncode == 130
    assert wait_gone(pids, 5) == set()


def test_sigkill_of_the_controller_leaves_nothing_after_a_bounded_time(
    tmp_path: Path, reaper: list[int]
) -> None:
    run, pids = _start_long_run(tmp_path, reaper)
    run.send_signal(signal.SIGKILL)
    run.communicate(timeout=10)
    t = time.monotonic()
    # Bounded by the launcher's stop grace and the entrypoint's; none depends on the controller.
    assert wait_gone(pids, 20) == set()
    print(f"everything gone {time.monotonic() - t:.2f} s after SIGKILL")


def test_sigterm_while_waiting_for_workers(tmp_path: Path, reaper: list[int]) -> None:
    """A cancel before any step runs still stops the cluster."""
    spec = write_workflow(tmp_path, [("never", ["touch ran"])], workers=2)
    run = daskstep("run", str(spec), "--start-timeout", "60")
    reaper.append(run.pid)
    wait_for(lambda: (tmp_path / ".daskstep" / "status.json").exists(), 30, "the run to begin")
    pids = descendants(run.pid)
    run.send_signal(signal.SIGTERM)
    run.communicate(timeout=60)
    assert run.returncode == 143
    assert not (tmp_path / "ran").exists()
    assert wait_gone(pids | descendants(run.pid), 10) == set()


def test_workspace_option_stages_inputs(tmp_path: Path) -> None:
    source = tmp_path / "analysis"
    spec = write_workflow(source, [("read", ["cat data/input.txt > copied.txt"])], workers=1)
    (source / "data").mkdir()
    (source / "data" / "input.txt").write_text("hello\n")
    text = spec.read_text().replace("workflow:", "inputs:\n  directories: [data]\nworkflow:", 1)
    spec.write_text(text + "outputs:\n  files: [copied.txt]\n")
    workspace = tmp_path / "ws"
    run = daskstep("run", str(spec), "--workspace", str(workspace))
    _out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert (workspace / "copied.txt").read_text() == "hello\n"
    assert f"output: {workspace / 'copied.txt'}" in err
    assert not (source / ".daskstep").exists()


RESTART = script(
    """
    import os, time
    from distributed import Client

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    before = set(client.run(os.getpid).values())
    kept = client.submit(lambda: 42, key="kept")
    assert kept.result() == 42
    t = time.monotonic()
    for _ in range(6):  # analysts restart between trials; more than the crash-loop limit
        client.restart()
    after = set(client.run(os.getpid).values())
    assert len(after) == 2 and not before & after, (before, after)
    assert client.submit(lambda x: x + 1, 1).result() == 2
    print(f"restarted 6 times in {time.monotonic() - t:.1f} s; the workers are new")
    """
)


def test_client_restart_brings_fresh_workers_back(tmp_path: Path) -> None:
    (tmp_path / "restart.py").write_text(RESTART)
    spec = write_workflow(tmp_path, [("restart", ["python restart.py"])], workers=2)
    run = daskstep("run", str(spec))
    out, err = run.communicate(timeout=180)
    assert run.returncode == 0, out + err
    assert "the workers are new" in out
    assert "keeps crashing" not in err


NANNY_ENV = script(
    """
    import json, os
    from distributed import Client

    client = Client(os.environ["DASK_SCHEDULER_URI"])
    names = ["OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
             "MALLOC_TRIM_THRESHOLD_", "PYTHONHASHSEED", "ANALYSIS_MODE"]
    seen = client.run(lambda: {n: os.environ.get(n) for n in names})
    print("NANNY " + json.dumps(sorted(seen.values(), key=json.dumps)[0]))
    print("SAME", len({json.dumps(v, sort_keys=True) for v in seen.values()}))
    print("HASH", len(set(client.run(lambda: hash("a string")).values())))
    """
)


def test_workers_get_the_nanny_environment_from_the_users_dask_config(tmp_path: Path) -> None:
    """Nanny's rules: pre-spawn-environ and environ from the Dask config; a variable set in our
    own environment wins over the config; every worker hashes alike."""
    config = tmp_path / "dask-config"
    config.mkdir()
    (config / "nanny.yaml").write_text(
        "distributed:\n  nanny:\n    environ:\n      ANALYSIS_MODE: fast\n"
        "    pre-spawn-environ:\n      MKL_NUM_THREADS: 2\n"
    )
    (tmp_path / "probe.py").write_text(NANNY_ENV)
    spec = write_workflow(tmp_path, [("probe", ["python probe.py"])], workers=2)
    env = {**os.environ, "DASK_CONFIG": str(config), "OPENBLAS_NUM_THREADS": "3"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(name, None)  # an in-process Nanny of another test may have left them here
    run = daskstep("run", str(spec), env=env)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("NANNY "))
    assert json.loads(line[6:]) == {
        "OMP_NUM_THREADS": "1",  # distributed's default
        "MKL_NUM_THREADS": "2",  # the user's config
        "OPENBLAS_NUM_THREADS": "3",  # our environment wins over the config
        "MALLOC_TRIM_THRESHOLD_": "65536",
        "PYTHONHASHSEED": "6640",
        "ANALYSIS_MODE": "fast",
    }
    assert "SAME 1" in out and "HASH 1" in out
