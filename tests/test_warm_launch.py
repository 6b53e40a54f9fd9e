"""A run's launcher is forked from `daskstep run`, which has imported distributed already, and
its workers are what an executed launcher's would be; where a fork cannot be that, it is
executed, and says why in its log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import daskstep, write_workflow

from daskstep import secret_env
from daskstep.backends.warm_launch import why_not_fork

# Run by the step: what each worker is, and what its launcher holds open.
PROBE = """
import json, os
import psutil
from distributed import Client


def look():
    import threadpoolctl

    me = psutil.Process()
    blas = {i["internal_api"]: i["num_threads"] for i in threadpoolctl.threadpool_info()}
    start = dict(
        e.split("=", 1) for e in open("/proc/self/environ").read().split("\\0") if "=" in e
    )
    return {
        "name": me.name(),
        "parent": me.parent().name(),
        "launcher": me.ppid(),
        "blas": blas,
        "hash": hash("daskstep"),
        "trim": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "at_start": start.get("DASKSTEP_PROBE_AT_START"),
    }


def pipes(pid):
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return {link for link in found if link.startswith("pipe:")}


with Client(os.environ["DASK_SCHEDULER_URI"]) as client:
    workers = list(client.run(look).values())
controller = psutil.Process(int(os.environ["DASKSTEP_PARENT_PID"]))
reaper = [p for p in controller.children() if "reaper" in " ".join(p.cmdline())]
print("PROBE " + json.dumps({
    "workers": workers,
    "step_seed": os.environ.get("PYTHONHASHSEED"),
    "reaper_pipe": sorted(pipes(reaper[0].pid) & pipes(workers[0]["launcher"])) if reaper else None,
}))
"""


def _probe(tmp_path: Path, env: dict[str, str], seed: str | None = None) -> tuple[dict, str]:
    (tmp_path / "probe.py").write_text(PROBE)
    spec = write_workflow(tmp_path, [("probe", ["python probe.py"])], workers=2)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(name, None)  # distributed's defaults, not whatever this session has
    env.pop("PYTHONHASHSEED", None)
    if seed is not None:
        env["PYTHONHASHSEED"] = seed
    run = daskstep("run", str(spec), env=env)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    line = next(ln for ln in out.splitlines() if ln.startswith("PROBE "))
    [launcher_log] = (tmp_path / ".daskstep" / "runs").glob("*/launcher.log")
    return json.loads(line[6:]), launcher_log.read_text()


def _hash_with_the_workers_seed() -> int:
    env = {**os.environ, "PYTHONHASHSEED": secret_env.WORKERS_HASH_SEED}
    out = subprocess.check_output([sys.executable, "-c", "print(hash('daskstep'))"], env=env)
    return int(out)


@pytest.mark.integration
@pytest.mark.parametrize("seed", [None, ""], ids=["no-seed", "empty-seed"])
def test_a_forked_launchers_workers_are_as_if_it_had_been_executed(
    tmp_path: Path, seed: str | None
) -> None:
    """An empty PYTHONHASHSEED is a random one, as no PYTHONHASHSEED is."""
    seen, launcher_log = _probe(tmp_path, dict(os.environ), seed)
    assert "executed, not forked" not in launcher_log
    for worker in seen["workers"]:
        assert (worker["name"], worker["parent"]) == ("ds-worker", "ds-launcher")
        assert worker["blas"].get("openblas", 1) == 1  # distributed's OPENBLAS_NUM_THREADS=1
        assert worker["trim"] == "65536"
        assert worker["hash"] == _hash_with_the_workers_seed()  # across workers and runs
    assert seen["step_seed"] is None  # the seed was for the cluster, not the user's step
    # the launcher holds none of the controller's pipes: the reaper's closes when it dies
    assert seen["reaper_pipe"] == []


@pytest.mark.integration
def test_a_setting_only_a_start_can_make_executes_the_launcher(tmp_path: Path) -> None:
    config = tmp_path / "dask-config"
    config.mkdir()
    (config / "nanny.yaml").write_text(
        "distributed:\n  nanny:\n    pre-spawn-environ:\n      DASKSTEP_PROBE_AT_START: 'yes'\n"
    )
    seen, launcher_log = _probe(tmp_path, {**os.environ, "DASK_CONFIG": str(config)})
    assert (
        "daskstep: the launcher is executed, not forked: DASKSTEP_PROBE_AT_START can only be "
        "set at a process's start" in launcher_log
    )
    for worker in seen["workers"]:
        assert worker["at_start"] == "yes"
        assert worker["blas"].get("openblas", 1) == 1
        assert worker["hash"] == _hash_with_the_workers_seed()


def test_why_a_launcher_is_not_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    assert "LD_PRELOAD" in (why_not_fork({"LD_PRELOAD": "libjemalloc.so"}) or "")
    assert why_not_fork({"OMP_NUM_THREADS": "1", "MALLOC_TRIM_THRESHOLD_": "65536"}) is None
    started = os.environ.get("PYTHONHASHSEED")  # this session's, if it was started with one
    other = "1" if started != "1" else "2"
    assert why_not_fork({"PYTHONHASHSEED": other}) == (
        f"this process was not started with PYTHONHASHSEED={other}"
    )
    monkeypatch.setattr(secret_env, "_holds_secrets", True)
    assert why_not_fork({}) == "this process holds secrets"
