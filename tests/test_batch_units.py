"""The batch backend's loop against a fake batch system (the queue as a dict), and the site
file's checks: examples, and a property over arbitrary YAML documents."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskstep.backends.batch import BatchBackend
from daskstep.batch.site import KNOWN, Site, load_site
from daskstep.batch.systems import BatchSystem, JobState
from daskstep.errors import ClusterError, InputError


class FakeQueue(BatchSystem):
    name = "fakeq"
    compute_backend = "fakecern"
    submit = "true"

    def __init__(self) -> None:
        super().__init__(Site())
        self.jobs: dict[str, JobState] = {}
        self.cancelled: list[str] = []
        self.asked = 0

    def worker_job(self, *args: Any) -> Any:
        raise NotImplementedError

    def submit_step(self, *args: Any) -> str:
        raise NotImplementedError

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        self.asked += 1
        return {j: self.jobs.get(j, JobState("GONE")) for j in job_ids}

    def exit_code(self, job_id: str) -> int | None:
        return None

    def queued(self, run_id: str) -> list[str]:
        return [j for j, s in self.jobs.items() if not s.ended]

    def cancel_run(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    def signal(self, job_id: str, signum: int) -> None: ...

    def abandoned_runs(self, everything: bool = False) -> set[str]:
        return set()


class FakeScheduler:
    def __init__(self) -> None:
        self.stopped = 0

    def check_alive(self) -> None: ...

    def stop(self) -> None:
        self.stopped += 1


def backend_with(queue: FakeQueue, jobs: dict[str, str]) -> tuple[BatchBackend, list[tuple]]:
    backend = BatchBackend(queue, run_id="ds-test", reaper=False)
    backend.scheduler = FakeScheduler()  # type: ignore[assignment]
    backend.jobs = dict(jobs)
    backend.submitted = True
    events: list[tuple] = []
    backend.watcher = lambda *event: events.append(event)
    for job_id in jobs.values():
        queue.jobs[job_id] = JobState("RUNNING")
    return backend, events


def test_an_ended_worker_job_is_reported_once_with_its_id_and_reason() -> None:
    queue = FakeQueue()
    backend, events = backend_with(queue, {"worker-0": "11", "worker-1": "12"})
    backend.check_alive()
    assert events == []
    queue.jobs["12"] = JobState("TIMEOUT", "TimeLimit")
    backend._next_poll = 0
    backend.check_alive()
    backend._next_poll = 0
    backend.check_alive()
    assert events == [("worker-1", "its fakeq job 12 ended", "fakeq says TIMEOUT: TimeLimit")]
    assert backend.status()["ended_jobs"]["worker-1"]["state"] == "TIMEOUT"


def test_the_queue_is_asked_at_most_once_a_second() -> None:
    queue = FakeQueue()
    backend, _ = backend_with(queue, {"worker-0": "11"})
    for _ in range(50):
        backend.check_alive()
    assert queue.asked == 1


def test_when_every_worker_job_ended_the_cluster_is_dead() -> None:
    queue = FakeQueue()
    backend, events = backend_with(queue, {"worker-0": "11", "worker-1": "12"})
    queue.jobs["11"] = JobState("CANCELLED")
    queue.jobs["12"] = JobState("NODE_FAIL", "NodeDown")
    with pytest.raises(ClusterError, match=r"every worker's fakeq job ended.*job 12 NODE_FAIL"):
        backend.check_alive()
    assert len(events) == 2


def test_stop_cancels_the_run_stops_the_scheduler_and_waits_for_the_queue() -> None:
    queue = FakeQueue()
    backend, _ = backend_with(queue, {"worker-0": "11"})
    scheduler = backend.scheduler
    original = queue.queued
    calls = []

    def queued(run_id: str) -> list[str]:
        calls.append(run_id)
        if len(calls) == 3:  # the job leaves the queue on the third look
            queue.jobs["11"] = JobState("CANCELLED")
        return original(run_id)

    queue.queued = queued  # type: ignore[method-assign]
    backend.stop()
    backend.stop()  # idempotent
    assert queue.cancelled == ["ds-test"]
    assert scheduler.stopped == 2 and len(calls) == 3  # type: ignore[attr-defined]


def test_a_pending_worker_is_named_with_the_queues_reason() -> None:
    queue = FakeQueue()
    backend, _ = backend_with(queue, {"worker-0": "11", "worker-1": "12"})
    queue.jobs["12"] = JobState("PENDING", "Resources")
    assert backend._waiting() == "worker-1 (job 12) is PENDING: Resources"


# -- the site file -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("partition: [a]\n", "partition"),
        ("walltime: soon\n", "walltime"),
        ("death_timeout: 0\n", "death_timeout"),
        ("extra_directives: --exclusive\n", "extra_directives"),
        ("queue: short\n", "queue"),
        ("shared_directory: /no/such/folder\n", "shared_directory"),
        ("- partition: a\n", ""),
    ],
)
def test_a_bad_site_setting_is_one_line_naming_it(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(text)
    with pytest.raises(InputError) as caught:
        load_site(path)
    (line,) = caught.value.lines()
    assert line.startswith(f"error: {path}: {field}")
    assert "\n" not in line and "; " in line


def test_a_good_site_file(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        "partition: short\naccount: atlas\nqos: normal\nwalltime: '1-02:00:00'\n"
        "extra_directives: ['--exclusive']\nprologue: ['module load python']\ndeath_timeout: 30\n"
    )
    site = load_site(path)
    assert (site.partition, site.walltime, site.death_timeout) == ("short", "1-02:00:00", 30)
    assert site.extra_directives == ("--exclusive",) and site.prologue == ("module load python",)


scalars = st.none() | st.booleans() | st.integers(-5, 10**6) | st.text(max_size=20)
keys = st.sampled_from(KNOWN) | st.text(max_size=10)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=documents)
def test_any_site_document_is_accepted_or_refused_in_one_line_each(
    tmp_path: Path, document: Any
) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(document))
    try:
        site = load_site(path)
    except InputError as e:
        assert e.lines() and all(
            line.startswith("error: ") and "\n" not in line for line in e.lines()
        )
    else:
        assert isinstance(site, Site)


def test_a_queue_that_does_not_answer_is_a_hiccup_then_a_failure(
    capsys: pytest.CaptureFixture[str],
) -> None:
    queue = FakeQueue()
    backend, events = backend_with(queue, {"worker-0": "11"})
    answers = iter([ClusterError("squeue: Socket timed out")] * 3)

    def states(job_ids: list[str]) -> dict[str, JobState]:
        raise next(answers)

    queue.states = states  # type: ignore[method-assign]
    backend.queue.patience = 0.2
    backend.check_alive()  # the first failure: a warning, the run goes on
    backend._next_poll = 0
    backend.check_alive()
    assert capsys.readouterr().err.count("Socket timed out; asking again") == 1
    time.sleep(0.3)
    backend._next_poll = 0
    with pytest.raises(ClusterError, match=r"Socket timed out \(for 0.2 s\)"):
        backend.check_alive()
    assert events == []


def test_the_scheduler_host_comes_from_the_site_then_dask_jobqueue_then_loopback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import dask.config

    from daskstep.backends.batch import scheduler_host

    queue = FakeQueue()
    queue.site = Site(scheduler_host="10.1.2.3")
    assert scheduler_host(queue) == "10.1.2.3"
    queue.site = Site()
    with dask.config.set({"jobqueue.fakeq.scheduler-options": {"host": "10.9.9.9"}}):
        assert scheduler_host(queue) == "10.9.9.9"
    assert capsys.readouterr().err == ""
    assert scheduler_host(queue) == "127.0.0.1"  # no controller to find a route to
    assert "set scheduler_host or interface in --site" in capsys.readouterr().err
    queue.site = Site(interface="lo")
    assert scheduler_host(queue) == "127.0.0.1"
    queue.site = Site(scheduler_host="10.1.2.3", interface="lo")
    assert scheduler_host(queue) == "10.1.2.3"  # the address given wins
    queue.site = Site(interface="no-such-if0")
    with pytest.raises(InputError) as raised:
        scheduler_host(queue)
    [line] = str(raised.value).splitlines()
    assert line.startswith("interface: 'no-such-if0' is not an interface of this host; use one of")
    assert "lo" in line


def test_without_a_choice_the_scheduler_listens_where_this_host_reaches_the_controller(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from daskstep.backends.batch import scheduler_host

    queue = FakeQueue()
    queue.controller_name = "fakectld"
    queue.controller = lambda: ("127.0.0.1", 26817)  # type: ignore[method-assign]
    assert scheduler_host(queue) == "127.0.0.1"
    assert capsys.readouterr().err.strip() == (
        "daskstep: the scheduler listens on 127.0.0.1 (lo), where this host reaches fakectld "
        "at 127.0.0.1:26817; set scheduler_host or interface in --site to choose"
    )


def test_the_controllers_address_read_from_slurm_and_htcondor(monkeypatch) -> None:
    import daskstep.batch.htcondor
    import daskstep.batch.systems
    from daskstep.batch.htcondor import HTCondor
    from daskstep.batch.systems import Slurm

    said = {"scontrol": "", "condor_config_val": ""}
    fake = lambda argv, what: said[argv[0]]  # noqa: E731
    monkeypatch.setattr(daskstep.batch.systems, "run_command", fake)
    monkeypatch.setattr(daskstep.batch.htcondor, "run_command", fake)
    said["scontrol"] = (
        "ClusterName = x\nSlurmctldHost[0]        = head(10.213.0.1)\nSlurmctldPort = 26817\n"
    )
    assert Slurm(Site()).controller() == ("10.213.0.1", 26817)
    said["scontrol"] = "SlurmctldHost[0]        = head.example.org\n"
    assert Slurm(Site()).controller() == ("head.example.org", 6817)
    said["scontrol"] = "nothing of the kind\n"
    assert Slurm(Site()).controller() is None
    for value, expected in [
        ("cm.example.org:9619\n", ("cm.example.org", 9619)),
        ("cm.example.org\n", ("cm.example.org", 9618)),
        ("<10.0.0.7:9618?alias=cm>\n", ("10.0.0.7", 9618)),
        ("127.0.0.1:20000, backup:9618\n", ("127.0.0.1", 20000)),
    ]:
        said["condor_config_val"] = value
        assert HTCondor(Site()).controller() == expected, value
