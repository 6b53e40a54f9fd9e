"""The packed entrypoint where users run it: interpreters without Dask (the host's python3 under
`env -i`, and Python 3.9 in a Debian bullseye chroot), and step environments holding past Dask
versions against clusters of the same and of another version (issue 3, acceptance)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import require, wait_for, wait_gone

pytest.register_assert_rewrite("envs")
from envs import (  # noqa: E402  (after the line above, so its asserts are rewritten too)
    DASK_VERSIONS,
    NEWEST,
    ClusterPool,
    Interpreter,
    chroot_interpreter,
    distributed_version,
    host_interpreter,
)

# The session fixtures (pyz, bullseye_root, dask_pythons, clusters) live in tests/envs.py.
pytest_plugins = ("envs",)

# The builders behind the fixtures take minutes the first time; each call below has its own
# shorter timeout, so a hang still ends well before this one.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

STATUS_KEYS = {
    "reason",
    "exit_code",
    "started_at",
    "finished_at",
    "scheduler",
    "workers",
    "peak_rss_bytes",
}
JOB = """\
import os
from distributed import Client

print("job started", flush=True)
with Client(os.environ["DASK_SCHEDULER_URI"], timeout=30) as client:
    futures = client.map(lambda x: x * x, range(10))
    total = client.submit(sum, futures).result(timeout=60)
    print(f"result={total}", flush=True)
"""
RESULT = "result=285"


# ---------------------------------------------------------------- helpers


@pytest.fixture(scope="session", params=["host", pytest.param("bullseye", marks=pytest.mark.slow)])
def interp(request: pytest.FixtureRequest, pyz: Path) -> Iterator[Interpreter]:
    """The zipapp's two Dask-free interpreters: `env -i /usr/bin/python3 -I` and Python 3.9."""
    if request.param == "host":
        require(os.path.exists("/usr/bin/python3"), "no /usr/bin/python3")
        it = host_interpreter(pyz)
    else:
        it = chroot_interpreter(request.getfixturevalue("bullseye_root"), pyz)
    yield it
    it.cleanup()


def run(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout)


def explain(done: subprocess.CompletedProcess) -> str:
    return f"exit {done.returncode}\nstdout:\n{done.stdout[-2000:]}\nstderr:\n{done.stderr[-2000:]}"


def status_of(path: Path) -> dict:
    doc = json.loads(path.read_text())
    assert set(doc) >= STATUS_KEYS, f"status lacks {STATUS_KEYS - set(doc)}: {doc}"
    return doc


def group_members(pgid: int) -> set[int]:
    """Live processes of one process group (zombies do not count)."""
    found = set()
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                found.add(p.pid)
        except (psutil.Error, OSError):
            pass
    return found


def mismatch_rows(stderr: str) -> list[str]:
    """The lines from the "version mismatch" line on."""
    lines = stderr.splitlines()
    for i, line in enumerate(lines):
        if "version mismatch" in line.lower():
            return lines[i:]
    return []


# ---------------------------------------------------------------- Dask-free interpreters


def test_there_is_no_dask_in_the_interpreter(interp: Interpreter) -> None:
    for module in ("dask", "distributed"):
        done = run(interp.argv("-c", f"import {module}", pyz=False))
        assert done.returncode == 1, explain(done)
        assert f"No module named '{module}'" in done.stderr


def test_the_interpreter_is_the_one_we_claim(interp: Interpreter) -> None:
    done = run(interp.argv("-c", "import sys; print(*sys.version_info[:2])", pyz=False))
    assert done.returncode == 0, explain(done)
    version = tuple(int(n) for n in done.stdout.split())
    assert version == (3, 9) if interp.root is not None else version >= (3, 9)


@pytest.mark.parametrize(
    ("script", "code"), [("exit 0", 0), ("exit 1", 1), ("exit 7", 7), ("kill -9 $$", 137)]
)
def test_exit_codes_pass_through(interp: Interpreter, script: str, code: int) -> None:
    done = run(interp.argv("--", "sh", "-c", script))
    assert done.returncode == code, explain(done)


def test_shell_commands_run_in_order_and_stop_at_the_first_failure(interp: Interpreter) -> None:
    here, there = interp.folder()
    done = run(
        interp.argv(
            "--shell", f"echo one >> {there}/log",
            "--shell", f"echo two >> {there}/log; exit 3",
            "--shell", f"echo three >> {there}/log",
        )
    )  # fmt: skip
    assert done.returncode == 3, explain(done)
    assert (here / "log").read_text().split() == ["one", "two"]


def test_timeout_gives_124_and_kills_the_grandchild(interp: Interpreter) -> None:
    here, there = interp.folder()
    script = f"sh -c 'echo $$ > {there}/grandchild; exec sleep 300' & wait"
    argv = interp.argv("--timeout", "1", "--grace-period", "1", "--status-file", f"{there}/s.json")
    done = run([*argv, "--", "sh", "-c", script])
    assert done.returncode == 124, explain(done)
    assert wait_gone({int((here / "grandchild").read_text())}, 5) == set()
    assert status_of(here / "s.json")["reason"] == "TimeoutExceeded"


def test_sigterm_gives_143_and_leaves_no_survivor_in_the_group(interp: Interpreter) -> None:
    here, there = interp.folder()
    script = f"sleep 300 & echo $$ > {there}/pgid; wait"
    wrapper = subprocess.Popen(
        interp.argv("--status-file", f"{there}/s.json", "--", "sh", "-c", script),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: (here / "pgid").exists() and (here / "pgid").read_text(), 30, "the step")
        pgid = int((here / "pgid").read_text())
        assert os.getpgid(pgid) == pgid, "the step should lead its own process group"
        assert len(group_members(pgid)) == 2  # sh and its sleep
        wrapper.send_signal(signal.SIGTERM)
        assert wrapper.wait(timeout=30) == 143, wrapper.stderr.read() if wrapper.stderr else ""
        assert wait_gone(group_members(pgid), 5) == set()
        assert group_members(pgid) == set()
        doc = status_of(here / "s.json")
        assert (doc["reason"], doc["exit_code"]) == ("Signaled", 143)
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
        wrapper.communicate()


def test_absent_scheduler_gives_69_within_a_few_seconds(interp: Interpreter) -> None:
    here, there = interp.folder()
    t = time.monotonic()
    done = run(
        interp.argv(
            "--scheduler", "127.0.0.1:9",
            "--wait-timeout", "1",
            "--status-file", f"{there}/s.json",
            "--", "touch", f"{there}/ran",
        )
    )  # fmt: skip
    elapsed = time.monotonic() - t
    assert done.returncode == 69, explain(done)
    assert elapsed < 8, f"took {elapsed:.1f} s for a 1 s wait timeout"
    assert not (here / "ran").exists()
    doc = status_of(here / "s.json")
    assert (doc["reason"], doc["exit_code"]) == ("SchedulerUnavailable", 69)


def test_status_file_and_termination_log(interp: Interpreter, clusters: ClusterPool) -> None:
    cluster = clusters.get(NEWEST, 2)
    here, there = interp.folder()
    done = run(
        interp.argv(
            "--scheduler", cluster.address,
            "--status-file", f"{there}/s.json",
            "--termination-log", f"{there}/termination-log",
            "--", "sh", "-c", "exit 0",
        )
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    doc = status_of(here / "s.json")
    assert (doc["reason"], doc["exit_code"]) == ("Completed", 0)
    assert doc["scheduler"] == cluster.address
    assert doc["started_at"] <= doc["finished_at"]
    assert 0 < (here / "termination-log").stat().st_size <= 1024


def test_scheduler_address_is_exported_to_the_command(
    interp: Interpreter, clusters: ClusterPool
) -> None:
    cluster = clusters.get(NEWEST, 2)
    bare = cluster.address.removeprefix("tcp://")  # REANA passes host:port
    show = ["--", "sh", "-c", 'echo "$DASK_SCHEDULER_URI $DASK_SCHEDULER_ADDRESS"']
    ways = [
        interp.argv("--scheduler", bare, *show),
        interp.argv(*show, env={"DASK_SCHEDULER_URI": bare}),
        interp.argv(*show, env={"DASK_SCHEDULER_ADDRESS": bare}),
    ]
    for argv in ways:
        done = run(argv)
        assert done.returncode == 0, explain(done)
        assert done.stdout.split() == [cluster.address, cluster.address]


def test_wait_workers_is_satisfied_by_enough_workers(
    interp: Interpreter, clusters: ClusterPool
) -> None:
    cluster = clusters.get(NEWEST, 2)
    here, there = interp.folder()
    done = run(
        interp.argv(
            "--scheduler", cluster.address,
            "--dashboard", cluster.dashboard,  # how to count workers without distributed
            "--wait-workers", "2",
            "--wait-timeout", "30",
            "--status-file", f"{there}/s.json",
            "--", "touch", f"{there}/ran",
        )
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    assert (here / "ran").exists()
    workers = status_of(here / "s.json")["workers"]
    assert (workers if isinstance(workers, int) else len(workers)) == 2


def test_too_few_workers_gives_75(interp: Interpreter, clusters: ClusterPool) -> None:
    cluster = clusters.get(NEWEST, 1)
    here, there = interp.folder()
    done = run(
        interp.argv(
            "--scheduler", cluster.address,
            "--dashboard", cluster.dashboard,  # how to count workers without distributed
            "--wait-workers", "2",
            "--wait-timeout", "3",
            "--status-file", f"{there}/s.json",
            "--", "touch", f"{there}/ran",
        )
    )  # fmt: skip
    assert done.returncode == 75, explain(done)
    assert not (here / "ran").exists()
    doc = status_of(here / "s.json")
    assert (doc["reason"], doc["exit_code"]) == ("TooFewWorkers", 75)


def test_wait_file_is_awaited_until_non_empty(interp: Interpreter) -> None:
    here, there = interp.folder()
    ticket = here / "ticket"

    def sidecar() -> None:  # as a credential sidecar would: empty first, then written
        time.sleep(0.5)
        ticket.touch()
        time.sleep(0.5)
        ticket.write_text("TGT\n")

    writer = threading.Thread(target=sidecar)
    writer.start()
    try:
        done = run(
            interp.argv(
                "--wait-file", f"{there}/ticket",
                "--wait-timeout", "20",
                "--", "sh", "-c", f"test -s {there}/ticket",
            )
        )  # fmt: skip
    finally:
        writer.join()
    assert done.returncode == 0, explain(done)


# ---------------------------------------------------------------- the Dask versions matrix

MATRIX = [*DASK_VERSIONS, NEWEST]


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "job.py"
    path.write_text(JOB)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("version", MATRIX)
def test_a_job_finishes_on_a_cluster_of_its_own_version(
    version: str,
    dask_pythons: dict[str, Path],
    clusters: ClusterPool,
    pyz: Path,
    job: Path,
    tmp_path: Path,
) -> None:
    python = dask_pythons[version]
    cluster = clusters.get(version, 2)
    status = tmp_path / "s.json"
    done = run(
        [
            str(python), str(pyz),
            "--versions", "fail",
            "--wait-workers", "2",
            "--wait-timeout", "60",
            "--timeout", "120",
            "--scheduler", cluster.address,
            "--status-file", str(status),
            "--", str(python), str(job),
        ],
        timeout=180,
    )  # fmt: skip
    assert done.returncode == 0, explain(done)
    assert RESULT in done.stdout
    assert not mismatch_rows(done.stderr), done.stderr
    doc = status_of(status)
    assert (doc["reason"], doc["scheduler"]) == ("Completed", cluster.address)


# A job on one version against a cluster of another, both ways. Whether such a computation works
# is Dask's business, not the entrypoint's: here it fails both ways (exit 1; a newest client calls
# identity(n_workers=...), unknown to a 2023.3.2 scheduler, and a 2023.3.2 client's tasks are
# cancelled by the newest scheduler). So `warn` must report the mismatch, run the job anyway and
# pass the job's own exit code through, whatever it is; `fail` must refuse before the job starts.
CROSS = [(NEWEST, "2023.3.2"), ("2023.3.2", NEWEST)]


def _cross(client: str, cluster_version: str, pythons: dict[str, Path]) -> tuple[str, str]:
    return distributed_version(pythons[client]), distributed_version(pythons[cluster_version])


@pytest.mark.slow
@pytest.mark.parametrize(("client", "cluster_version"), CROSS)
def test_another_version_is_reported_by_warn(
    client: str,
    cluster_version: str,
    dask_pythons: dict[str, Path],
    clusters: ClusterPool,
    pyz: Path,
    job: Path,
    tmp_path: Path,
) -> None:
    python = dask_pythons[client]
    cluster = clusters.get(cluster_version, 2)
    ours, theirs = _cross(client, cluster_version, dask_pythons)
    status = tmp_path / "s.json"
    done = run(
        [
            str(python), str(pyz),
            "--versions", "warn",
            "--wait-workers", "2",
            "--wait-timeout", "60",
            "--timeout", "90",
            "--scheduler", cluster.address,
            "--status-file", str(status),
            "--", str(python), str(job),
        ],
        timeout=180,
    )  # fmt: skip
    rows = mismatch_rows(done.stderr)
    assert rows, f"no version mismatch reported\n{explain(done)}"
    assert any("distributed" in r and ours in r and theirs in r for r in rows[1:]), done.stderr
    # The job ran: its own exit code (and status) came through, whatever the computation did.
    assert "job started" in done.stdout, explain(done)
    doc = status_of(status)
    assert doc["exit_code"] == done.returncode, explain(done)
    assert doc["reason"] != "VersionMismatch"
    assert done.returncode != 78 and (done.returncode != 0 or RESULT in done.stdout)


@pytest.mark.slow
@pytest.mark.parametrize(("client", "cluster_version"), CROSS)
def test_another_version_is_refused_by_fail(
    client: str,
    cluster_version: str,
    dask_pythons: dict[str, Path],
    clusters: ClusterPool,
    pyz: Path,
    tmp_path: Path,
) -> None:
    python = dask_pythons[client]
    cluster = clusters.get(cluster_version, 2)
    ours, theirs = _cross(client, cluster_version, dask_pythons)
    status, marker = tmp_path / "s.json", tmp_path / "ran"
    done = run(
        [
            str(python), str(pyz),
            "--versions", "fail",
            "--wait-workers", "2",
            "--wait-timeout", "60",
            "--scheduler", cluster.address,
            "--status-file", str(status),
            "--", "touch", str(marker),
        ],
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 78, explain(done)
    assert not marker.exists(), "the command ran despite --versions fail"
    rows = mismatch_rows(done.stderr)
    assert any("distributed" in r and ours in r and theirs in r for r in rows[1:]), done.stderr
    doc = status_of(status)
    assert (doc["reason"], doc["exit_code"]) == ("VersionMismatch", 78)
