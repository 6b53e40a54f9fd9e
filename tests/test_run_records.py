"""Each run is a record of its own, tried as users run it on an ordinary day: a step of 0.1 s,
a second run in the same workspace, a run whose `daskstep run` was SIGKILLed, the same command
from another folder. Real runs, real processes, real signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import descendants, wait_for, wait_gone, write_workflow
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.integration


def cli(*args: str, cwd: Path | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "daskstep", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=timeout,
    )


def saying(folder: Path, word: str = "alpha", command: str = "echo said-$word", cluster=False):
    """A reana.yaml with one step saying a word, a parameter; a cluster of one worker or none."""
    lines = ["inputs:", "  parameters:", f"    word: {word}", "workflow:", "  type: serial"]
    if cluster:
        lines += ["  resources:", "    dask:", "      image: docker.io/daskstep/test:1.0"]
        lines += ["      number_of_workers: 1", "      single_worker_threads: 1"]
        lines += ["      single_worker_memory: 1Gi"]
    lines += ["  specification:", "    steps:", "      - name: say"]
    lines += ["        commands:", f"          - {json.dumps(command)}"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reana.yaml").write_text("\n".join(lines) + "\n")
    return folder / "reana.yaml"


# -- no line lost, however short the step ----------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("cluster", [False, True], ids=["no-cluster", "cluster"])
@settings(
    max_examples=9,  # and the example below: 10 runs each, 20 in all (the CI version)
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(seconds=st.floats(min_value=0.0, max_value=1.0).map(lambda s: round(s, 2)))
@example(seconds=0.0)
def test_no_line_is_lost_however_short_the_step(cluster: bool, seconds: float) -> None:
    """The log sidecar was stopped while it still imported, before it could handle the stop:
    a step of under half a second lost every line (15 of 15 runs)."""
    with tempfile.TemporaryDirectory() as folder:
        command = f"sleep {seconds}; echo said-$word" if seconds else "echo said-$word"
        reana = saying(Path(folder), command=command, cluster=cluster)
        done = cli("run", str(reana))
        assert done.returncode == 0, done.stderr
        logs = cli("logs", "--workspace", folder, "--component", "job")
        assert logs.returncode == 0, logs.stderr
        assert "said-alpha\n" in logs.stdout, (seconds, logs.stdout, logs.stderr)


# -- a second run in the same workspace ------------------------------------------------------------
FEATURE = """\
Feature: The word
  Scenario: The step says the first word
    Then the job logs for the "say" step should contain
      \"\"\"
      said-alpha
      \"\"\"
"""


def test_a_second_run_is_kept_apart_and_judged_alone(tmp_path: Path) -> None:
    reana = saying(tmp_path)
    (tmp_path / "word.feature").write_text(FEATURE)
    reana.write_text(reana.read_text() + "tests:\n  files: [word.feature]\n")
    assert cli("run", str(reana)).returncode == 0
    second = cli("run", str(reana), "-p", "word=beta")
    assert second.returncode == 0, second.stderr

    job = cli("logs", "--workspace", str(tmp_path), "--component", "job").stdout
    assert "said-beta\n" in job and "said-alpha" not in job
    first = cli("logs", "--workspace", str(tmp_path), "--component", "job", "--run", "1").stdout
    assert "said-alpha\n" in first and "said-beta" not in first

    judged = cli("test", "--workspace", str(tmp_path))  # the latest: run 2, which said beta
    assert judged.returncode == 1, judged.stdout + judged.stderr
    assert "FAILED  The word: The step says the first word" in judged.stdout
    assert cli("test", "--workspace", str(tmp_path), "--run", "1").returncode == 0

    runs = json.loads(cli("list", "--workspace", str(tmp_path), "--json").stdout)
    assert [(r["run"], r["status"], r["exit_code"]) for r in runs] == [
        (2, "finished", 0),
        (1, "finished", 0),
    ]
    listed = cli("list", "--workspace", str(tmp_path)).stdout.splitlines()
    assert listed[0].split()[:2] == ["RUN", "STATUS"] and len(listed) == 3
    assert listed[1].split()[:2] == ["2", "finished"]
    # where users and tools found the latest run's files before runs were numbered
    latest = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert latest["run"] == 2 and (tmp_path / ".daskstep" / "report.html").is_file()
    assert (tmp_path / ".daskstep" / "runs" / "1" / "tests.xml").is_file()


def test_test_and_status_work_from_another_folder(tmp_path: Path) -> None:
    """status.json kept the reana.yaml's path relative to where `run` started."""
    analysis = tmp_path / "analysis"
    reana = saying(analysis)
    (analysis / "word.feature").write_text(FEATURE)
    reana.write_text(reana.read_text() + "tests:\n  files: [word.feature]\n")
    assert cli("run", "reana.yaml", cwd=analysis).returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    judged = cli("test", "--workspace", str(analysis), cwd=elsewhere)
    assert judged.returncode == 0, judged.stdout + judged.stderr
    status = cli("status", "--workspace", str(analysis), cwd=elsewhere)
    assert status.returncode == 0 and status.stdout.startswith("run 1: finished, exit code 0")
    assert f"workflow  {reana}" in status.stdout


# -- a run whose controller died -------------------------------------------------------------------
def test_a_sigkilled_run_is_recorded_dead_and_logs_follow_ends(tmp_path: Path) -> None:
    reana = write_workflow(
        tmp_path, [("long", ["echo started-long; sleep 120"]), ("after", ["echo never"])]
    )
    private = Path(tempfile.mkdtemp(prefix="t-"))  # the run's temporary folders go here
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskstep", "run", str(reana)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "TMPDIR": str(private)},
    )
    assert proc.stdout is not None
    tree: set[int] = set()
    try:
        for line in proc.stdout:
            tree |= descendants(proc.pid)
            if line == "started-long\n":
                break
        tree |= descendants(proc.pid)
        follow = subprocess.Popen(
            [sys.executable, "-m", "daskstep", "logs", "-f", "--workspace", str(tmp_path)]
            + ["--component", "job"],
            stdout=subprocess.PIPE,
            text=True,
        )
        proc.kill()
        killed = time.monotonic()
        proc.wait()
        status = tmp_path / ".daskstep" / "status.json"
        wait_for(lambda: json.loads(status.read_text())["status"] != "running", 15, "the mark")
        marked = time.monotonic() - killed
        out, _ = follow.communicate(timeout=15)  # it ends by itself
    finally:
        proc.kill()
    doc = json.loads(status.read_text())
    assert doc["status"] == "failed" and doc["reason"] == "ControllerLost", doc
    assert doc["finished_at"] and "died before the run ended" in doc["message"]
    assert [(s["name"], s["status"]) for s in doc["steps"]] == [
        ("long", "failed"),
        ("after", "skipped"),
    ]
    assert "started-long\n" in out
    shown = cli("status", "--workspace", str(tmp_path))
    assert shown.stdout.startswith("run 1: failed (ControllerLost)"), shown.stdout
    assert not wait_gone(tree, 30), "the dead run left processes behind"
    print(f"marked failed {marked:.2f} s after the SIGKILL")
    # nor files: the cluster's folder (its sockets, spilled data) and the keys' folder
    wait_for(lambda: not any(private.iterdir()), 15, "the run's temporary folders to go")
    private.rmdir()


def test_a_run_whose_reaper_died_too_reads_as_dead(tmp_path: Path) -> None:
    """No reaper wrote it (a reboot, say): readers see the controller gone from this host."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    run = tmp_path / ".daskstep" / "runs" / "1"
    (run / "logs").mkdir(parents=True)
    mark = f"{os.uname().nodename}:{dead.pid}"
    doc = {"run": 1, "status": "running", "controller": mark, "steps": [], "cluster": {}}
    (run / "status.json").write_text(json.dumps(doc))
    follow = cli("logs", "-f", "--workspace", str(tmp_path), timeout=30)
    assert follow.returncode == 0  # it ended by itself
    assert cli("status", "--workspace", str(tmp_path)).stdout.startswith(
        "run 1: failed (ControllerLost)"
    )
    alive = {**doc, "controller": f"{os.uname().nodename}:{os.getpid()}"}
    (run / "status.json").write_text(json.dumps(alive))
    assert cli("status", "--workspace", str(tmp_path)).stdout.startswith("run 1: running")


# -- logs, as users pipe and mistype them ----------------------------------------------------------
def test_logs_piped_into_head_and_mistyped_options(tmp_path: Path) -> None:
    reana = saying(tmp_path, command="seq 1 20000", cluster=True)
    assert cli("run", str(reana)).returncode == 0
    piped = subprocess.run(
        ["bash", "-o", "pipefail", "-c", f"{sys.executable} -m daskstep logs | head -2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == "" and len(piped.stdout.splitlines()) == 2

    none = cli("logs", "--workspace", str(tmp_path), "--worker", "worker-9")
    assert none.returncode == 2
    assert none.stderr == "error: --worker: run 1 has no worker worker-9; its workers: worker-0\n"

    negative = cli("logs", "--workspace", str(tmp_path), "--since", "-5")
    assert negative.returncode == 2 and negative.stderr.startswith("error: ")
    assert "--since" in negative.stderr and "Traceback" not in negative.stderr

    numbered = cli("logs", "--workspace", str(tmp_path), "--component", "job", "--numbers")
    rows = numbered.stdout.splitlines()
    seq, _, text = rows[5].partition("\t")
    after = cli("logs", "--workspace", str(tmp_path), "--component", "job", "--since", seq)
    assert after.stdout.splitlines()[0] == rows[6].partition("\t")[2]
    assert text == rows[5].partition("\t")[2] and int(seq) == 6


# -- the records themselves ------------------------------------------------------------------------
def finished(record, started: str, status: str = "finished", controller: str = "elsewhere:1"):
    record.folder.mkdir(parents=True, exist_ok=True)
    doc = {"run": record.number, "status": status, "exit_code": 0, "started_at": started}
    doc.update(duration_seconds=1.0, controller=controller, cluster={}, steps=[])
    record.status_file.write_text(json.dumps(doc))


def test_prune_keeps_the_latest_and_the_live(tmp_path: Path) -> None:
    from daskstep.record import Workspace

    workspace = Workspace(tmp_path)
    for day, status in ((1, "finished"), (2, "running"), (3, "failed"), (4, "finished")):
        finished(workspace.new_run(), f"2026-11-0{day}T10:00:00.000Z", status)
    dry = cli("prune", "--workspace", str(tmp_path), "--keep", "1", "--dry-run")
    assert dry.stdout.splitlines() == [
        "run 2 is still running; kept",
        "would remove run 1",
        "would remove run 3",
    ]
    assert workspace.numbers() == [1, 2, 3, 4]
    cli("prune", "--workspace", str(tmp_path), "--before", "2026-11-03")
    assert workspace.numbers() == [2, 3, 4]
    cli("prune", "--workspace", str(tmp_path), "--keep", "0")
    assert workspace.numbers() == [2, 4]  # the running one, and the latest, stay
    bad = cli("prune", "--workspace", str(tmp_path), "--before", "yesterday")
    assert bad.returncode == 2 and bad.stderr.startswith("error: --before: 'yesterday'")
    assert cli("prune", "--workspace", str(tmp_path)).returncode == 2
    assert workspace.new_run().number == 5  # numbers are never given twice


def test_a_workspace_of_an_older_daskstep_becomes_run_1(tmp_path: Path) -> None:
    from daskstep.record import Workspace
    from sidecar.store import LogStore

    state = tmp_path / ".daskstep"
    state.mkdir()
    (state / "status.json").write_text(json.dumps({"status": "finished", "exit_code": 0}))
    store = LogStore(state / "logs")
    store.stream("job").append([b"from the old run\n"])
    store.close()
    assert Workspace(tmp_path).new_run().number == 2
    old = cli("logs", "--workspace", str(tmp_path), "--run", "1", "--component", "job")
    assert old.stdout == "from the old run\n"
    assert json.loads((state / "status.json").read_text())["status"] == "finished"
    assert (state / "runs" / "1" / "status.json").is_file()


def test_run_numbers_and_a_run_that_is_not_there(tmp_path: Path) -> None:
    none = cli("status", "--workspace", str(tmp_path))
    assert none.returncode == 2 and none.stderr.startswith("error: --workspace: no run in ")
    from daskstep.record import Workspace

    finished(Workspace(tmp_path).new_run(), "2026-11-01T10:00:00.000Z")
    missing = cli("logs", "--workspace", str(tmp_path), "--run", "7")
    assert missing.returncode == 2
    assert missing.stderr == f"error: --run: {tmp_path} has no run 7; its runs: 1\n"
    zero = cli("status", "--workspace", str(tmp_path), "--run", "0")
    assert zero.returncode == 2 and "numbered from 1" in zero.stderr


def test_parameters_from_the_command_line(tmp_path: Path) -> None:
    reana = saying(tmp_path)
    typo = cli("run", str(reana), "-p", "wrod=beta")
    assert typo.returncode == 2
    assert typo.stderr == (
        "error: --parameter: wrod: not among inputs.parameters (declared: word); fix the "
        "name, or declare it in the reana.yaml\n"
    )
    assert not (tmp_path / ".daskstep").exists()  # bad input starts and records nothing
    form = cli("run", str(reana), "-p", "word")
    assert form.returncode == 2 and "is not NAME=VALUE" in form.stderr
    reana.write_text(reana.read_text().replace("word: alpha", "word: 3"))
    assert "is not a int" in cli("run", str(reana), "-p", "word=x").stderr
    done = cli("run", str(reana), "-p", "word=4")
    assert done.returncode == 0 and "said-4" in done.stdout


def test_the_sidecar_stops_on_a_closed_stdin_even_before_it_runs(tmp_path: Path) -> None:
    """The stop comes through the pipe, which waits for the sidecar to read it."""
    (tmp_path / "job.log").write_text("one\ntwo\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskstep", "sidecar", "logs", "--stop-on-eof"]
        + ["--workspace", str(tmp_path), "--source", f"job={tmp_path / 'job.log'}"],
        stdin=subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.close()  # at once: it is still starting
    assert proc.wait(timeout=60) == 0
    assert (tmp_path / ".daskstep" / "logs" / "job.log").read_text() == "one\ntwo\n"


def test_the_reaper_of_an_ended_run_neither_drains_nor_marks(tmp_path: Path) -> None:
    """A run whose end is recorded has nothing left for its reaper: it must not wait out a
    log store still held (up to its 30 s drain) nor touch the status."""
    import fcntl

    store = tmp_path / "logs"
    store.mkdir()
    held = os.open(store / ".writer.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # a log sidecar that has not exited yet
    status = tmp_path / "status.json"
    status.write_text(json.dumps({"status": "finished", "steps": []}))
    before = status.read_text()
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskstep", "sidecar", "reaper"]
        + ["--status", str(status), "--store", str(store)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        assert proc.wait(timeout=15) == 0, "the reaper waited on the store of an ended run"
    finally:
        proc.kill()
        os.close(held)
    assert status.read_text() == before


def test_the_run_s_own_lines_have_one_error_prefix(tmp_path: Path) -> None:
    reana = saying(tmp_path, command="exit 3")
    done = cli("run", str(reana))
    assert done.returncode == 3
    assert "daskstep: error" not in done.stderr and "daskstep: warning" not in done.stderr
    assert "daskstep: step say failed with exit code 3" in done.stderr


def _interruptible() -> None:
    """As a terminal's shell starts tee: SIGINT at its default, whatever the test process left
    ignored or blocked (both would be inherited across exec)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _signal_masks(pid: int) -> str:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return ", ".join(line for line in lines if line.startswith(("SigBlk", "SigIgn", "SigCgt")))


def test_ctrl_c_of_a_run_piped_into_tee_is_still_a_cancelled_run(tmp_path: Path) -> None:
    """`daskstep run … 2>&1 | tee run.log`, then Ctrl-C: tee dies with it, and the lines
    daskstep writes after it must not change how the run ends."""
    reana = saying(tmp_path, command="echo started-long; sleep 120", cluster=True)
    log = tmp_path / "run.log"
    read, write = os.pipe()
    run = subprocess.Popen(
        [sys.executable, "-m", "daskstep", "run", str(reana)],
        stdout=write,
        stderr=subprocess.STDOUT,
        process_group=0,  # the terminal's foreground group: daskstep and tee
    )
    tee = subprocess.Popen(
        ["tee", str(log)],
        stdin=read,
        stdout=subprocess.DEVNULL,
        process_group=run.pid,
        preexec_fn=_interruptible,
    )
    os.close(read)
    os.close(write)
    try:
        wait_for(lambda: log.exists() and "started-long" in log.read_text(), 120, "the step")
        masks = _signal_masks(tee.pid)
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C does
        assert tee.wait(timeout=10) == -signal.SIGINT, f"tee outlived Ctrl-C ({masks})"
        code = run.wait(timeout=120)
    finally:
        run.kill()
        tee.kill()
    assert code == 130
    doc = json.loads((tmp_path / ".daskstep" / "status.json").read_text())
    assert (doc["status"], doc["exit_code"]) == ("cancelled", 130)
    assert (tmp_path / ".daskstep" / "report.html").is_file()
