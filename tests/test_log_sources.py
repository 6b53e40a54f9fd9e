"""Kubernetes and Docker log sources, with fakes behind their thin client layers.

The fakes behave like the engines where it matters: a timestamp prefix on each message, a
`since` bound coarser than the timestamps (whole seconds, as Kubernetes' sinceTime), follow
responses that block until the container writes or ends, and a container restart starting a
new instance (Kubernetes) or appending to the same log (Docker). Every test compares the exact
store contents.
"""

from __future__ import annotations

import calendar
import dataclasses
import threading
import time
from pathlib import Path

import pytest

from sidecar.docker_logs import COMPONENT_LABEL as D_COMPONENT
from sidecar.docker_logs import RUN_LABEL, WORKER_LABEL, ContainerInfo, DockerSource
from sidecar.kubernetes import CLUSTER_LABEL, COMPONENT_LABEL, KubernetesSource, PodInfo
from sidecar.store import LogStore, read_lines
from sidecar.timestamped import LineAssembler, Record, parse_timestamp

T0 = calendar.timegm((2026, 11, 27, 11, 48, 1)) * 10**9 + 123_456_789
MS = 1_000_000
FAST = {"relist_interval": 0.02, "retry_interval": 0.02}


def fmt_ts(ns: int, fixed: bool = False) -> str:
    """RFC3339Nano as Go writes it: Kubernetes trims trailing zeros, Docker keeps nine digits."""
    sec, frac = divmod(ns, 10**9)
    digits = f"{frac:09d}" if fixed else f"{frac:09d}".rstrip("0")
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        + ("." + digits if digits else "")
        + "Z"
    )


class FakeLog:
    """One log response: what is there from `since` on, then (following) what comes next."""

    def __init__(self, engine, key, instance: int, since: int, follow: bool) -> None:
        self.engine, self.key, self.instance = engine, key, instance
        self.since, self.follow, self.closed = since, follow, False
        self.messages = engine.messages

    def __iter__(self):
        e, entry, sent, turn = self.engine, 0, 0, 0
        while True:
            with e.cond:
                entries, out = e.logs[self.key][self.instance], []
                while entry < len(entries):
                    ts, data, late = entries[entry]
                    if late and self.follow:
                        break  # written after the engine ended follow responses
                    if ts >= self.since and sent < len(data):
                        prefix = (fmt_ts(ts, e.fixed) + " ").encode() if sent == 0 else b""
                        out.append(prefix + data[sent:])
                    sent = len(data)
                    if entry + 1 == len(entries):
                        break
                    entry, sent = entry + 1, 0
                if not out:
                    live = self.instance == len(e.logs[self.key]) - 1 and e.live[self.key]
                    if self.closed or not (self.follow and live):
                        return
                    e.cond.wait(0.05)
                    continue
            if self.messages:  # Docker without a TTY: one item per message
                yield from out
                continue
            joined, i = b"".join(out), 0
            while i < len(joined):  # pieces of varied sizes, as the network cuts them
                size, turn = e.chunks[turn % len(e.chunks)], turn + 1
                yield joined[i : i + size]
                i += size

    def close(self) -> None:
        self.closed = True


class FakeEngine:
    """Logs by key, each a list of instances of [timestamp, bytes] messages."""

    fixed = False
    messages = False
    chunks = (3, 50, 4096)

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.logs: dict[tuple[str, str], list[list[list]]] = {}
        self.live: dict[tuple[str, str], bool] = {}
        self.calls: list[tuple] = []

    def write(self, key, ts: int, data: bytes, late: bool = False) -> None:
        with self.cond:
            self.logs[key][-1].append([ts, bytearray(data), late])
            self.cond.notify_all()

    def extend(self, key, data: bytes) -> None:
        """More bytes of the last message: what a network chunk boundary looks like."""
        with self.cond:
            self.logs[key][-1][-1][1] += data
            self.cond.notify_all()

    def end(self, key) -> None:
        with self.cond:
            self.live[key] = False
            self.cond.notify_all()


class FakeKubelet(FakeEngine):
    """A `PodLogClient`: pods with labels and phases, containers with restart instances."""

    def __init__(self) -> None:
        super().__init__()
        self.pods: dict[str, PodInfo] = {}

    def add_pod(self, name, component=None, *, labels=None, containers=None, phase="Running"):
        labels = dict(labels or {CLUSTER_LABEL: "c1"})
        if component:
            labels[COMPONENT_LABEL] = component
        containers = tuple(containers or [component or "main"])
        with self.cond:
            self.pods[name] = PodInfo(
                name, f"uid-{name}", labels, containers, phase, len(self.pods)
            )
            for c in containers:
                self.logs[(name, c)], self.live[(name, c)] = [[]], True

    def set_phase(self, name, phase) -> None:
        self.pods[name] = dataclasses.replace(self.pods[name], phase=phase)

    def restart(self, key) -> None:
        with self.cond:
            pod = self.pods[key[0]]
            restarts = {**pod.restarts, key[1]: pod.restarts.get(key[1], 0) + 1}
            self.pods[key[0]] = dataclasses.replace(pod, restarts=restarts)
            self.logs[key].append([])
            self.live[key] = True
            self.cond.notify_all()

    def list_pods(self, namespace, label_selector):
        want = dict(kv.split("=") for kv in label_selector.split(","))
        return [p for p in self.pods.values() if all(p.labels.get(k) == v for k, v in want.items())]

    def read_log(self, namespace, pod, container, *, since_ns, follow, previous=False):
        self.calls.append((pod, container, since_ns, follow, previous))
        if self.pods[pod].phase == "Pending":
            raise RuntimeError("container is waiting to start: ContainerCreating")
        instances = len(self.logs[(pod, container)])
        if previous and instances < 2:
            raise RuntimeError("previous terminated container not found")
        since = since_ns // 10**9 * 10**9 if since_ns else 0  # sinceTime: whole seconds
        return FakeLog(self, (pod, container), instances - (2 if previous else 1), since, follow)


def lines(store: LogStore, component: str, name: str | None = None) -> list[tuple]:
    return [(x.timestamp_ns, x.data, x.partial) for x in read_lines(store.path(component, name))]


def poll_until(source, store, check, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        source.poll(store)
        if check():
            return
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def settle(source, store, rounds: int = 10) -> None:
    """A few more polls: nothing may arrive twice later."""
    for _ in range(rounds):
        source.poll(store)
        time.sleep(0.01)


@pytest.fixture
def store(tmp_path: Path):
    s = LogStore(tmp_path / "logs")
    yield s
    s.close()


@pytest.fixture
def kubelet():
    return FakeKubelet()


def k8s_source(kubelet, **options):
    return KubernetesSource(kubelet, "ns", "c1", job_selector="job=j1", **{**FAST, **options})


# -- timestamps and line assembly


def test_parse_timestamp_keeps_nanoseconds_zones_and_rejects_the_rest():
    assert parse_timestamp("2026-11-27T11:48:01.123456789Z") == T0
    assert parse_timestamp(b"2026-11-27T11:48:01.123456789Z") == T0
    assert parse_timestamp("2026-11-27t11:48:01.123456789z") == T0
    assert parse_timestamp("2026-11-27T11:48:01.1234567891Z") == T0  # cut, not rounded
    assert parse_timestamp("2026-11-27T11:48:01.1Z") == T0 - 23_456_789
    assert parse_timestamp("2026-11-27T11:48:01Z") == T0 - 123_456_789
    assert parse_timestamp("2026-11-27T13:48:01.123456789+02:00") == T0
    assert parse_timestamp("2026-11-27T06:18:01.123456789-05:30") == T0
    assert parse_timestamp("1970-01-01T00:00:00.000000001Z") == 1
    for ns in (T0, T0 + 1, T0 + 999_999_999, 0, 4102444800 * 10**9 + 5):
        assert parse_timestamp(fmt_ts(ns)) == ns == parse_timestamp(fmt_ts(ns, fixed=True))
    for bad in (
        "2026-13-01T00:00:00Z",
        "2026-02-30T00:00:00Z",
        "2026-11-27 11:48:01Z",
        "2026-11-27T11:48:01.Z",
        "2026-11-27T11:48:01+0200",
        "2026-11-27T24:00:00Z",
        "2026-11-27T11:48:01",
        "+026-11-27T11:48:01Z",
        "２026-11-27T11:48:01Z",
        "hello world",
    ):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_assembler_gives_the_same_records_whatever_the_chunks():
    raw = b"".join(f"{fmt_ts(T0 + i)} line {i}\n".encode() for i in range(50)) + b"%s tail" % (
        fmt_ts(T0 + 50).encode()
    )
    expected = [Record(T0 + i, f"line {i}\n".encode()) for i in range(50)]
    for size in (1, 2, 7, 35, 36, 37, 1000, len(raw)):
        a = LineAssembler()
        got = [r for i in range(0, len(raw), size) for r in a.feed(raw[i : i + size])]
        assert got == expected  # the last line waits for its newline
        assert a.finish() == [Record(T0 + 50, b"tail")]


def test_assembler_strips_prefixes_only_at_fragment_boundaries():
    # a runtime split "A"*16 + "B"*16 + "C"*3 into three messages, each with its own prefix
    a = LineAssembler(fragment=16)
    raw = f"{fmt_ts(T0)} {'A' * 16}{fmt_ts(T0 + 5)} {'B' * 16}{fmt_ts(T0 + 9)} CCC\n"
    assert a.feed(raw.encode()) == [Record(T0, b"A" * 16 + b"B" * 16 + b"CCC\n")]
    # a timestamp elsewhere in the text is the user's and is kept
    text = f"at {fmt_ts(T0)} it failed\n"
    assert a.feed(f"{fmt_ts(T0 + 1)} {text}".encode()) == [Record(T0 + 1, text.encode())]


def test_assembler_cuts_long_lines_into_partial_records():
    a = LineAssembler(max_line=10)
    assert a.feed(f"{fmt_ts(T0)} {'x' * 25}\n{fmt_ts(T0 + 1)} ok\n".encode()) == [
        Record(T0, b"x" * 10),
        Record(T0, b"x" * 10),
        Record(T0, b"x" * 5 + b"\n"),
        Record(T0 + 1, b"ok\n"),
    ]


# -- the Kubernetes source


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
        "c1-default-worker-1.log.idx",
        "c1-default-worker-2.log",
        "c1-default-worker-2.log.idx",
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


class Flood:
    """A container that logs far faster than poll() drains."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.produced = 0

    def __iter__(self):
        for i in range(self.count):
            self.produced += 1
            yield f"{fmt_ts(T0 + i)} {i:08d} {'x' * 80}\n".encode()

    def close(self) -> None:
        pass


def test_memory_stays_bounded_when_a_container_logs_faster_than_poll(kubelet, store):
    kubelet.add_pod("w1", "worker")
    flood = Flood(20_000)
    kubelet.read_log = lambda *a, **k: flood
    source = k8s_source(kubelet, max_queue_bytes=64 << 10, max_poll_bytes=16 << 10)
    source.restore(None, store)
    per_poll = []
    while store.stream("worker", "w1").records < flood.count:
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


class FakeDocker(FakeEngine):
    """A `DockerLogClient`: one log per container, kept across restarts."""

    fixed = True
    messages = True

    def __init__(self) -> None:
        super().__init__()
        self.containers: dict[str, ContainerInfo] = {}

    def add(self, cid, labels, state="running") -> None:
        with self.cond:
            self.containers[cid] = ContainerInfo(cid, f"name-{cid}", labels, state, len(self.logs))
            self.logs[(cid, "")], self.live[(cid, "")] = [[]], state == "running"

    def set_state(self, cid, state) -> None:
        with self.cond:
            self.containers[cid] = dataclasses.replace(self.containers[cid], state=state)
            self.live[(cid, "")] = state == "running"
            self.cond.notify_all()

    def list_containers(self, labels):
        return [
            c
            for c in self.containers.values()
            if all(c.labels.get(k) == v for k, v in labels.items())
        ]

    def read_log(self, container_id, *, since_ns, follow):
        self.calls.append((container_id, since_ns, follow))
        since = since_ns // MS * MS if since_ns else 0
        return FakeLog(self, (container_id, ""), 0, since, follow)


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


class FullDiskOnce(LogStore):
    """A store whose first append fails, as on a full disk."""

    failed = False

    def stream(self, component, name=None):
        stream = super().stream(component, name)
        if not self.failed:
            self.failed = True

            def append(lines, timestamps_ns=None):
                del stream.append  # the next append works
                raise OSError(28, "No space left on device")

            stream.append = append
        return stream


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
