"""`daskstep gc` when the engine or the batch system cannot be asked: one `error:` line naming
what is missing and the fix, exit 69, never a raw exception (issue 19). No Docker engine and no
batch system is used: DOCKER_HOST names a socket that does not exist, and PATH holds fakes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest


def gc(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daskstep", "gc", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 69, done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: ") and "Errno" not in line and "('" not in line, line
    return line


def test_no_docker_engine_at_a_socket_is_one_line(tmp_path: Path) -> None:
    where = f"unix://{tmp_path}/docker.sock"
    line = one_line(gc(DOCKER_HOST=where))
    assert line == (
        f"error: cannot reach the Docker engine at {where}: No such file or directory; "
        "start it or set DOCKER_HOST"
    )


def test_no_docker_engine_at_a_port_is_one_line() -> None:
    with socket.socket() as s:  # a port nobody listens on once it is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    where = f"tcp://127.0.0.1:{port}"
    line = one_line(gc(DOCKER_HOST=where))
    assert line == (
        f"error: cannot reach the Docker engine at {where}: Connection refused; "
        "start it or set DOCKER_HOST"
    )


def fake(folder: Path, name: str, script: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + script + "\n")
    path.chmod(0o755)


@pytest.mark.parametrize(("backend", "command"), [("slurm", "squeue"), ("htcondor", "condor_q")])
def test_batch_commands_not_on_path_are_one_line(
    tmp_path: Path, backend: str, command: str
) -> None:
    line = one_line(gc("--backend", backend, PATH=str(tmp_path)))
    assert f"{command} is not on PATH; run daskstep where" in line and "add them to PATH" in line


SQUEUE = """\
case "$*" in
  *%j*) echo 'ds-gone|daskstep-controller=elsewhere:1:1' ;;
  *) echo 4242 ;;
esac
"""


def test_scancel_missing_is_one_line(tmp_path: Path) -> None:
    fake(tmp_path, "squeue", SQUEUE)
    line = one_line(gc("--backend", "slurm", "--all", PATH=str(tmp_path)))
    assert line.startswith("error: cancelling the run's Slurm jobs: scancel is not on PATH")


def test_a_failing_squeue_is_one_line_with_its_own_words(tmp_path: Path) -> None:
    fake(
        tmp_path,
        "squeue",
        "echo 'squeue: error: no controller' >&2\necho 'fatal: gone' >&2\nexit 1\n",
    )
    done = gc("--backend", "slurm", PATH=str(tmp_path))
    assert done.returncode == 69 and "Traceback" not in done.stderr
    [line] = done.stderr.splitlines()
    assert line == "error: asking Slurm: squeue exited 1: squeue: error: no controller fatal: gone"


def test_what_gc_cancelled_is_counted_in_words(tmp_path: Path) -> None:
    fake(tmp_path, "squeue", SQUEUE)
    fake(tmp_path, "scancel", "exit 0\n")
    done = gc("--backend", "slurm", "--all", PATH=str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ds-gone: cancelled 1 slurm job\n"


def test_a_backend_that_leaves_nothing_behind_is_one_line_naming_those_that_do() -> None:
    done = gc("--backend", "local")
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.splitlines() == [
        "error: --backend: a local run leaves nothing for gc to remove; "
        "use one of docker, slurm, htcondor"
    ]


def test_kubernetes_gc_says_how_to_delete_a_dead_runs_root() -> None:
    done = gc("--backend", "kubernetes")
    assert done.returncode == 2 and done.stdout == "", done.stderr
    [line] = done.stderr.splitlines()
    assert line.startswith("error: --backend: a kubernetes run's objects are owned by its root")
    assert line.endswith("-l daskstep.io/component=root,daskstep.io/run=RUN_ID")
