"""The Docker container log source, on a fake engine; and failed appends."""

from __future__ import annotations

import pytest
from log_fakes import (
    FAST,
    T0,
    FakeDocker,
    FullDiskOnce,
    k8s_source,
    lines,
    poll_until,
    settle,
)

from sidecar.docker_logs import COMPONENT_LABEL as D_COMPONENT
from sidecar.docker_logs import RUN_LABEL, WORKER_LABEL, DockerSource
from sidecar.store import LogStore


def test_docker_source_selects_by_label_and_follows_across_restarts(store, tmp_path):
    docker = FakeDocker()
    run = {RUN_LABEL: "r1"}
    docker.add("s", {**run, D_COMPONENT: "scheduler"})
    docker.add("w", {**run, D_COMPONENT: "worker", WORKER_LABEL: "worker-0"})
    docker.add("j", {**run, D_COMPONENT: "job"})
    docker.add("x", {RUN_LABEL: "r2", D_COMPONENT: "job"})
    docker.add("y", {**run})  # no component: not ours to ship
    docker.write(("s", ""), T0, b"scheduler\n")
    docker.write(("w", ""), T0, b"w 1\n")
    docker.write(("j", ""), T0, b"job\n")
    docker.write(("x", ""), T0, b"other run\n")
    source = DockerSource(docker, "r1", **FAST)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "worker", "worker-0")) == 1)
    docker.set_state("w", "exited")  # a restart: the same log goes on
    settle(source, store)  # seen as exited: read once more, done
    docker.set_state("w", "running")
    docker.write(("w", ""), T0 + 1, b"w 2\n")
    poll_until(source, store, lambda: len(lines(store, "worker", "worker-0")) == 2)
    source.close()  # and a sidecar restart over a fresh store
    docker.write(("w", ""), T0 + 1, b"w 3\n")
    again = LogStore(tmp_path / "logs")
    second = DockerSource(docker, "r1", **FAST)
    second.restore(None, again)
    poll_until(second, again, lambda: len(lines(again, "worker", "worker-0")) >= 3)
    settle(second, again)
    assert lines(again, "worker", "worker-0") == [
        (T0, b"w 1\n", False),
        (T0 + 1, b"w 2\n", False),
        (T0 + 1, b"w 3\n", False),
    ]
    assert lines(again, "scheduler") == [(T0, b"scheduler\n", False)]
    assert lines(again, "job") == [(T0, b"job\n", False)]
    assert [c for c in docker.calls if c[0] == "w"][-1] == ("w", T0 + 1, True)
    assert {c[0] for c in docker.calls} == {"s", "w", "j"}
    second.close()
    again.close()


def test_docker_frames_tell_a_partial_line_from_the_next_message(store):
    docker = FakeDocker()
    docker.add("w", {RUN_LABEL: "r1", D_COMPONENT: "worker"})
    docker.write(("w", ""), T0, b"progress 50%")  # stdout, no newline yet
    docker.write(("w", ""), T0 + 1, b"warning on stderr\n")
    docker.write(("w", ""), T0 + 2, b"A" * 16)  # a long line split by the engine...
    docker.write(("w", ""), T0 + 3, b"B\n")  # ...at its fragment size
    source = DockerSource(docker, "r1", fragment=16, **FAST)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "worker", "name-w")) >= 3)
    settle(source, store)
    assert lines(store, "worker", "name-w") == [
        (T0, b"progress 50%", True),
        (T0 + 1, b"warning on stderr\n", False),
        (T0 + 2, b"A" * 16 + b"B\n", False),
    ]
    source.close()


def test_lines_written_after_the_follow_response_ended_are_read_once_more(store):
    docker = FakeDocker()
    docker.add("j", {RUN_LABEL: "r1", D_COMPONENT: "job"})
    docker.write(("j", ""), T0, b"working\n")
    source = DockerSource(docker, "r1", **FAST)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "job")) == 1)
    with docker.cond:  # it exits; its last words reach the log after the follow response ended
        docker.write(("j", ""), T0 + 1, b"last words", late=True)
        docker.set_state("j", "exited")
    poll_until(source, store, lambda: len(lines(store, "job")) == 2)
    settle(source, store)
    assert lines(store, "job") == [(T0, b"working\n", False), (T0 + 1, b"last words", True)]
    assert [c[2] for c in docker.calls] == [True, False]  # followed, then read once, then done
    source.close()


def test_lines_a_failed_append_did_not_store_are_read_again(kubelet, tmp_path):
    store = FullDiskOnce(tmp_path / "logs")
    kubelet.add_pod("w1", "worker")
    kubelet.write(("w1", "worker"), T0, b"a\n")
    kubelet.write(("w1", "worker"), T0 + 1, b"b\n")
    source = k8s_source(kubelet)
    source.restore(None, store)
    with pytest.raises(OSError):
        poll_until(source, store, lambda: False)
    kubelet.write(("w1", "worker"), T0 + 2, b"c\n")
    poll_until(source, store, lambda: len(lines(store, "worker", "w1")) >= 3)
    settle(source, store)
    assert [x[1] for x in lines(store, "worker", "w1")] == [b"a\n", b"b\n", b"c\n"]
    source.close()
    store.close()


def test_a_final_drain_reads_containers_that_stopped_before_they_were_ever_listed(store):
    """The run's teardown stops its containers, then drains: a worker that lived and stopped
    between two listings is read at the final drain, to its last line, and the drain ends."""
    docker = FakeDocker()
    run = {RUN_LABEL: "r1"}
    source = DockerSource(docker, "r1", **{**FAST, "relist_interval": 3600})
    source.restore(None, store)
    source.poll(store)  # listed while there was nothing
    docker.add("w", {**run, D_COMPONENT: "worker", WORKER_LABEL: "worker-0"}, state="exited")
    docker.add("s", {**run, D_COMPONENT: "scheduler"}, state="exited")
    for i in range(3):
        docker.write(("w", ""), T0 + i, b"w %d\n" % i)
    docker.write(("s", ""), T0, b"scheduler up\n")
    docker.write(("s", ""), T0 + 1, b"last without newline")
    rounds = 0
    while True:
        moved = source.poll(store, final=True)
        rounds += 1
        if moved == 0 and not source.draining():
            break
        assert rounds < 1000, "the drain never ended"
    assert [x[1] for x in lines(store, "worker", "worker-0")] == [b"w 0\n", b"w 1\n", b"w 2\n"]
    assert lines(store, "scheduler")[-1] == (T0 + 1, b"last without newline", True)
    assert all(not follow for _cid, _since, follow in docker.calls)
    source.close()
