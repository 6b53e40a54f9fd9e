"""Fakes behind the thin client layers of the Kubernetes and Docker log sources.

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

from sidecar.docker_logs import ContainerInfo
from sidecar.kubernetes import CLUSTER_LABEL, COMPONENT_LABEL, KubernetesSource, PodInfo
from sidecar.store import LogStore, read_lines

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


def k8s_source(kubelet, **options):
    selectors = [f"{CLUSTER_LABEL}=c1", "job=j1"]
    return KubernetesSource(kubelet, "ns", selectors, **{**FAST, **options})


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
