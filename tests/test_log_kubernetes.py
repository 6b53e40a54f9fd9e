"""The Kubernetes pod log source, on a fake kubelet behind its thin client layer."""

from __future__ import annotations

import time

from log_fakes import (
    MS,
    T0,
    Flood,
    k8s_source,
    lines,
    poll_until,
    settle,
)

from sidecar.kubernetes import CLUSTER_LABEL
from sidecar.store import LogStore


def test_resume_skips_exactly_what_the_store_has_at_the_same_timestamp(kubelet, store):
    kubelet.add_pod("w1", "worker")
    key = ("w1", "worker")
    kubelet.write(key, T0 - 100 * MS, b"a\n")  # same second as T0: sent again, dropped
    for word in (b"b\n", b"c\n", b"d\n"):  # three lines share one timestamp
        kubelet.write(key, T0, word)
    kubelet.write(key, T0 + 1, b"e\n")
    # before a crash the sidecar had stored a, b and c
    store.stream("worker", "w1").append([b"a\n", b"b\n", b"c\n"], [T0 - 100 * MS, T0, T0])
    source = k8s_source(kubelet)
    source.restore(None, store)
    want = [(T0 - 100 * MS, b"a\n", False), (T0, b"b\n", False), (T0, b"c\n", False)]
    want += [(T0, b"d\n", False), (T0 + 1, b"e\n", False)]
    poll_until(source, store, lambda: len(lines(store, "worker", "w1")) >= 5)
    settle(source, store)
    assert lines(store, "worker", "w1") == want
    assert kubelet.calls[0] == ("w1", "worker", T0, True, False)
    source.close()


def test_restart_with_a_fresh_store_over_the_same_folder(kubelet, store, tmp_path):
    kubelet.add_pod("w1", "worker")
    key = ("w1", "worker")
    for i in range(5):
        kubelet.write(key, T0 + i * MS, b"line %d\n" % i)
    first = k8s_source(kubelet)
    first.restore(None, store)
    poll_until(first, store, lambda: len(lines(store, "worker", "w1")) == 5)
    checkpoint = first.state()
    kubelet.write(key, T0 + 5 * MS, b"line 5\n")
    poll_until(first, store, lambda: len(lines(store, "worker", "w1")) == 6)
    first.close()  # SIGKILL: the store holds line 5, the checkpoint does not
    for i in range(6, 9):
        kubelet.write(key, T0 + i * MS, b"line %d\n" % i)
    again = LogStore(tmp_path / "logs")
    second = k8s_source(kubelet)
    second.restore(checkpoint, again)
    poll_until(second, again, lambda: len(lines(again, "worker", "w1")) >= 9)
    settle(second, again)
    assert lines(again, "worker", "w1") == [
        (T0 + i * MS, b"line %d\n" % i, False) for i in range(9)
    ]
    second.close()
    again.close()


def test_a_crash_between_the_log_write_and_its_index_loses_nothing(kubelet, store, tmp_path):
    kubelet.add_pod("w1", "worker")
    key = ("w1", "worker")
    for i in range(3):
        kubelet.write(key, T0 + i * MS, b"line %d\n" % i)
    first = k8s_source(kubelet)
    first.restore(None, store)
    poll_until(first, store, lambda: len(lines(store, "worker", "w1")) == 3)
    first.close()
    with open(store.path("worker", "w1"), "ab") as log:  # killed after the .log write
        log.write(b"line 3\n")
    for i in range(3, 6):
        kubelet.write(key, T0 + i * MS, b"line %d\n" % i)
    again = LogStore(tmp_path / "logs")
    second = k8s_source(kubelet)
    second.restore(None, again)
    poll_until(second, again, lambda: len(lines(again, "worker", "w1")) >= 6, timeout=1)
    settle(second, again)
    assert [x[1] for x in lines(again, "worker", "w1")] == [b"line %d\n" % i for i in range(6)]
    second.close()
    again.close()


def test_components_and_new_worker_pods_are_picked_up(kubelet, store):
    kubelet.add_pod("c1-scheduler-x", "scheduler", containers=["scheduler", "log-sidecar"])
    kubelet.add_pod("c1-default-worker-1", "worker")
    kubelet.add_pod("run-j1", labels={"job": "j1"}, containers=["step", "log-sidecar"])
    kubelet.add_pod("other", "worker", labels={CLUSTER_LABEL: "c2"})
    kubelet.write(("c1-scheduler-x", "scheduler"), T0, b"scheduler up\n")
    kubelet.write(("c1-scheduler-x", "log-sidecar"), T0, b"not this one\n")
    kubelet.write(("c1-default-worker-1", "worker"), T0 + 1, b"worker 1 up\n")
    kubelet.write(("run-j1", "step"), T0 + 2, b"job says hi\n")
    kubelet.write(("other", "worker"), T0, b"another cluster\n")
    source = k8s_source(kubelet)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "job")) == 1)
    kubelet.add_pod("c1-default-worker-2", "worker")  # scaled up later
    kubelet.write(("c1-default-worker-2", "worker"), T0 + 3, b"worker 2 up\n")
    poll_until(source, store, lambda: len(lines(store, "worker", "c1-default-worker-2")) == 1)
    settle(source, store)
    assert lines(store, "scheduler") == [(T0, b"scheduler up\n", False)]
    assert lines(store, "worker", "c1-default-worker-1") == [(T0 + 1, b"worker 1 up\n", False)]
    assert lines(store, "worker", "c1-default-worker-2") == [(T0 + 3, b"worker 2 up\n", False)]
    assert lines(store, "job") == [(T0 + 2, b"job says hi\n", False)]
    assert sorted(p.name for p in (store.root / "workers").iterdir()) == [
        "c1-default-worker-1.log",
        "c1-default-worker-1.log.index",
        "c1-default-worker-2.log",
        "c1-default-worker-2.log.index",
    ]
    source.close()


def test_job_pods_are_read_one_after_the_other_oldest_first(kubelet, store):
    kubelet.add_pod("run-j1-try1", labels={"job": "j1"}, containers=["step"])
    kubelet.add_pod("run-j1-try2", labels={"job": "j1"}, containers=["step"], phase="Pending")
    kubelet.write(("run-j1-try1", "step"), T0, b"try 1\n")
    source = k8s_source(kubelet)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "job")) == 1)
    kubelet.set_phase("run-j1-try2", "Running")
    kubelet.write(("run-j1-try2", "step"), T0 + 2, b"try 2\n")
    settle(source, store)
    assert len(lines(store, "job")) == 1  # try 1 is still running: its stream owns job.log
    kubelet.write(("run-j1-try1", "step"), T0 + 1, b"try 1 fails\n")
    kubelet.end(("run-j1-try1", "step"))
    kubelet.set_phase("run-j1-try1", "Failed")
    poll_until(source, store, lambda: len(lines(store, "job")) == 3)
    settle(source, store)
    assert [x[1] for x in lines(store, "job")] == [b"try 1\n", b"try 1 fails\n", b"try 2\n"]
    source.close()


def test_a_restarted_container_is_followed_again(kubelet, store):
    kubelet.add_pod("w1", "worker")
    key = ("w1", "worker")
    kubelet.write(key, T0, b"a\n")
    source = k8s_source(kubelet)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "worker", "w1")) == 1)
    kubelet.write(key, T0 + 1, b"killed mid-li")  # it dies without its newline
    kubelet.restart(key)
    kubelet.write(key, T0 + 2 * 10**9, b"b\n")
    poll_until(source, store, lambda: len(lines(store, "worker", "w1")) == 3)
    settle(source, store)
    assert lines(store, "worker", "w1") == [
        (T0, b"a\n", False),
        (T0 + 1, b"killed mid-li", True),
        (T0 + 2 * 10**9, b"b\n", False),
    ]
    source.close()


def test_a_restart_while_the_sidecar_was_down_reads_the_previous_instance(kubelet, store):
    kubelet.add_pod("w1", "worker")
    key = ("w1", "worker")
    kubelet.write(key, T0, b"a\n")
    kubelet.write(key, T0 + 1, b"b\n")
    kubelet.restart(key)
    kubelet.write(key, T0 + 2, b"c\n")
    store.stream("worker", "w1").append([b"a\n"], [T0])
    source = k8s_source(kubelet)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "worker", "w1")) >= 3)
    settle(source, store)
    assert [x[1] for x in lines(store, "worker", "w1")] == [b"a\n", b"b\n", b"c\n"]
    assert [c[4] for c in kubelet.calls[:2]] == [True, False]  # previous first, then current
    source.close()


def test_a_partial_last_line_waits_until_final_and_its_rest_follows_later(kubelet, store, tmp_path):
    kubelet.add_pod("w1", "worker")
    key = ("w1", "worker")
    kubelet.write(key, T0, b"a\n")
    kubelet.write(key, T0 + 1, b"half a li")  # the rest is still on its way
    source = k8s_source(kubelet)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "worker", "w1")) == 1)
    settle(source, store)
    assert lines(store, "worker", "w1") == [(T0, b"a\n", False)]
    assert source.poll(store, final=True) == 1  # shutdown: stored, marked partial
    source.close()
    assert lines(store, "worker", "w1")[1] == (T0 + 1, b"half a li", True)
    kubelet.extend(key, b"ne\n")
    kubelet.write(key, T0 + 2, b"b\n")
    again = LogStore(tmp_path / "logs")
    second = k8s_source(kubelet)
    second.restore(None, again)
    poll_until(second, again, lambda: len(lines(again, "worker", "w1")) >= 4)
    settle(second, again)
    assert lines(again, "worker", "w1") == [
        (T0, b"a\n", False),
        (T0 + 1, b"half a li", True),
        (T0 + 1, b"ne\n", False),
        (T0 + 2, b"b\n", False),
    ]
    second.close()
    again.close()


def test_a_very_long_line_is_cut_and_resumes_after_a_crash_mid_line(kubelet, store, tmp_path):
    kubelet.add_pod("w1", "worker")
    key = ("w1", "worker")
    line = bytes(range(97, 123)) * (100 << 10)  # 2.5 MiB, no newline inside
    for n, i in enumerate(range(0, len(line), 16 << 10)):  # the runtime's 16 KiB messages
        kubelet.write(key, T0 + n, line[i : i + (16 << 10)])
    kubelet.extend(key, b"\n")
    kubelet.write(key, T0 + 10**9, b"next\n")
    store.stream("worker", "w1").append([line[: 1 << 20]], [T0])  # the crash: one piece stored
    source = k8s_source(kubelet)
    source.restore(None, store)
    poll_until(source, store, lambda: len(lines(store, "worker", "w1")) >= 4)
    settle(source, store)
    got = lines(store, "worker", "w1")
    assert [(ts, len(data), partial) for ts, data, partial in got] == [
        (T0, 1 << 20, True),
        (T0, 1 << 20, True),
        (T0, len(line) + 1 - (2 << 20), False),
        (T0 + 10**9, 5, False),
    ]
    assert b"".join(data for _, data, _ in got) == line + b"\nnext\n"
    source.close()


def test_memory_stays_bounded_when_a_container_logs_faster_than_poll(kubelet, store):
    kubelet.add_pod("w1", "worker")
    flood = Flood(20_000)
    kubelet.read_log = lambda *a, **k: flood
    source = k8s_source(kubelet, max_queue_bytes=64 << 10, max_poll_bytes=16 << 10)
    source.restore(None, store)
    per_poll = []
    while store.stream("worker", "w1").lines < flood.count:
        per_poll.append(source.poll(store))
        assert source.queue.size <= 64 << 10
        time.sleep(0.001)
    assert source.queue.peak <= 64 << 10
    assert source.queue.peak > 48 << 10  # the producer did fill the queue
    assert max(per_poll) <= (16 << 10) // 100 + 2  # one poll stores about max_poll_bytes
    stored = lines(store, "worker", "w1")
    assert [x[1][:8] for x in stored] == [b"%08d" % i for i in range(flood.count)]
    assert [x[0] for x in stored] == [T0 + i for i in range(flood.count)]
    source.close()


# -- the Docker source
