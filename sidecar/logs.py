"""`daskstep sidecar logs`: ship job, scheduler and worker logs into the store, live, exactly once.

The loop: each source moves what it has into the store; the store is synced; only then are the
sources' positions checkpointed. On SIGTERM (or, with `--stop-on-eof`, when its stdin closes) it
drains what is left, flushes lines still waiting for their newline, and exits 0.

`daskstep run` stops it by closing its stdin, not by a signal: a run whose step takes 0.1 s
asks for the stop while this process is still importing, before any handler exists, and a
SIGTERM then killed it with nothing stored. A closed pipe waits until we read it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from sidecar.base import Source
from sidecar.checkpoint import Checkpoints, Syncer
from sidecar.files import FileSource
from sidecar.lifecycle import StopSignal, follow_run
from sidecar.store import COMPONENTS, LogStore
from sidecar.wake import FolderWatch, folder_of

POLL_INTERVAL = 0.05
EXIT_UNAVAILABLE = 69  # a container source's engine or API cannot be reached
SYNC_EVERY = 1.0  # while a burst keeps every round busy, the longest a checkpoint waits
DRAIN_ROUNDS = 10_000
DRAIN_SECONDS = 30.0
DOCKER_RELIST = 0.5  # a local engine's list is cheap: new containers are followed at once


SOURCE_FORMS = (
    "COMPONENT=GLOB (COMPONENT: job, scheduler, worker or engine), "
    "docker:LABEL=VALUE[,LABEL=VALUE...], or kubernetes:NAMESPACE/SELECTOR"
)


@dataclass(frozen=True)
class SourceSpec:
    """One `--source`, checked but not connected: files, containers by label, or pods."""

    kind: str  # file, docker or kubernetes
    text: str
    component: str = ""  # file
    pattern: str = ""  # file
    labels: tuple[tuple[str, str], ...] = ()  # docker
    namespace: str = ""  # kubernetes
    selector: str = ""  # kubernetes


def parse_source(spec: str) -> SourceSpec:
    """ValueError with the forms when `spec` is none of them."""
    kind, colon, rest = spec.partition(":")
    if colon and kind == "docker":
        pairs = [item.partition("=") for item in rest.split(",")]
        if rest and all(k and sep for k, sep, _ in pairs):
            return SourceSpec("docker", spec, labels=tuple((k, v) for k, _, v in pairs))
    elif colon and kind == "kubernetes":
        namespace, _, selector = rest.partition("/")
        if namespace and selector.strip():
            return SourceSpec("kubernetes", spec, namespace=namespace, selector=selector)
    else:
        component, sep, pattern = spec.partition("=")
        if sep and component in COMPONENTS and pattern:
            # the checkpoint key must not depend on the cwd
            return SourceSpec("file", spec, component, str(Path(pattern).absolute()))
    raise ValueError(
        f"{spec!r} is none of the forms; write {SOURCE_FORMS}; e.g. worker=/logs/workers/*.log, "
        "docker:daskstep.run=RUN_ID or kubernetes:default/dask.org/cluster-name=CLUSTER"
    )


def build_sources(specs: list[SourceSpec]) -> list[Source]:
    """The sources, connected. A namespace's selectors share one Kubernetes source, so that a
    pod two selectors match is read once."""
    sources: list[Source] = []
    selectors: dict[str, list[str]] = {}
    for spec in specs:
        if spec.kind == "file":
            sources.append(FileSource(spec.component, spec.pattern))
        elif spec.kind == "docker":
            from sidecar.docker_logs import DockerSDKLogClient, DockerSource

            client = DockerSDKLogClient()
            sources.append(DockerSource(client, dict(spec.labels), relist_interval=DOCKER_RELIST))
        else:
            selectors.setdefault(spec.namespace, []).append(spec.selector)
    if selectors:
        from sidecar.kubernetes import KubernetesPodLogClient, KubernetesSource

        client = KubernetesPodLogClient()
        sources += [KubernetesSource(client, ns, sel) for ns, sel in selectors.items()]
    return sources


class Shipper:
    def __init__(
        self,
        store: LogStore,
        sources: list[Source],
        checkpoints: Checkpoints,
        stop: StopSignal | None = None,
    ) -> None:
        self.store = store
        self.sources = sources
        self.checkpoints = checkpoints
        self.stop = stop or StopSignal()
        self.syncer: Syncer | None = None  # set by run(): fsyncs and checkpoints off the loop
        self._handed = ""  # the last checkpoint handed to the syncer
        self._handed_at = time.monotonic()
        self._seen = ""  # the sources' positions after the last round
        self.stored = 0  # lines the last round stored

    def start(self) -> None:
        saved = self.checkpoints.load()
        for source in self.sources:
            source.restore(saved.get(source.key), self.store)

    def step(self, final: bool = False) -> int:
        """One round; what it did: lines stored, or 1 for a position change without lines
        (a switch to the next file), so that callers go on until nothing moves."""
        lines = self.stored = sum(source.poll(self.store, final) for source in self.sources)
        states = {s.key: s.state() for s in self.sources}
        if self.syncer is not None and not final:
            text = json.dumps(states, sort_keys=True)
            moved, self._seen = text != self._seen, text
            switched = any(s.switched for s in self.sources)
            # The syncer makes the store durable, then saves this: once the sources are caught
            # up, or every SYNC_EVERY seconds during a burst (an fsync of a file being appended
            # to holds its writes up: one per round halved the shipping speed)
            due = not lines or switched or time.monotonic() >= self._handed_at + SYNC_EVERY
            if text != self._handed and due:
                self.syncer.hand(self.store.take_dirty(), states)
                self._handed, self._handed_at = text, time.monotonic()
            if switched:
                self.syncer.flush()  # a new file is read only once its switch is saved
            return lines or int(moved)
        if self.syncer is not None:
            self.syncer.flush()  # an older checkpoint must not land after this one
        self.store.sync()  # durable first ...
        moved = self.checkpoints.save(states)  # ... then this
        return lines or int(moved)

    def drain(self) -> None:
        """To the end of every queued file and every container log, then stop; bounded, so a
        writer that never stops cannot keep us from exiting."""
        deadline = time.monotonic() + DRAIN_SECONDS
        for _ in range(DRAIN_ROUNDS):
            moved = self.step(final=True)
            if moved == 0 and not any(s.draining() for s in self.sources):
                return
            if time.monotonic() > deadline:
                print(f"warning: logs not drained within {DRAIN_SECONDS:g} s", file=sys.stderr)
                return
            if moved == 0:
                time.sleep(0.01)  # a container's last read is on its way

    def run(self, poll_interval: float = POLL_INTERVAL) -> int:
        self.start()
        self.syncer = Syncer(self.checkpoints)
        files = [s.pattern for s in self.sources if isinstance(s, FileSource)]
        watch = FolderWatch([f for f in map(folder_of, files) if f is not None])
        busy_at = -math.inf  # started quiet
        try:
            while not self.stop.is_set():
                watch.drain()  # this round reads whatever changed before it
                if self.step():
                    if self.stored:
                        busy_at = time.monotonic()
                    continue
                # After a quiet spell a change wakes us at once (a new worker's log, a line
                # after a pause); while lines trickle in, or a writer keeps changing a file
                # that holds no lines, rounds keep the poll's pace.
                now = time.monotonic()
                quiet = now - busy_at >= poll_interval
                self.stop.wait(poll_interval, also=watch.descriptors() if quiet else ())
                if quiet and time.monotonic() - now < poll_interval:
                    busy_at = time.monotonic()  # woken early: the next early wake waits a poll
            self.drain()
        finally:
            with contextlib.suppress(Exception):  # an I/O error was raised already
                self.syncer.flush()
            self.syncer.close()
            watch.close()
            for source in self.sources:
                source.close()
            self.store.close()
        return 0


def take_the_store(folder: Path, stop: StopSignal, poll: float = 0.2) -> int | None:
    """One writer per store: another log sidecar on the same workspace (the previous step's
    pod, still draining, or `daskstep run` shipping into the same claim) goes first. The lock
    is held until this process exits; a stop while waiting ends the wait. The fd, or None."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
    told = False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if not told:
                print("waiting: another log sidecar writes this store", file=sys.stderr, flush=True)
                told = True
        if stop.wait(poll):
            os.close(fd)
            return None


def store_in_use(folder: Path) -> bool:
    """Whether a log sidecar holds the store's writer lock now (it does until it exits)."""
    try:
        fd = os.open(folder / ".writer.lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def stop_on_eof(stop: StopSignal) -> None:
    """Set `stop` once stdin closes: the controller holds the pipe's other end, and closes it
    to stop us (or dies, which closes it too)."""

    def read() -> None:
        with contextlib.suppress(OSError):
            while os.read(sys.stdin.fileno(), 4096):
                pass
        stop.set()

    threading.Thread(target=read, daemon=True, name="stop-on-eof").start()


def main(
    folder: Path,
    specs: list[str],
    checkpoint_file: Path | None = None,
    eof_stops: bool = False,
) -> int:
    """Ship into the store at `folder` (`daskstep sidecar logs` gives the workspace's)."""
    stop = StopSignal().install()
    if eof_stops:
        stop_on_eof(stop)
    follow_run()  # started by `daskstep run`: drain and go if it dies
    if take_the_store(folder, stop) is None:
        return 0
    store = LogStore(folder)
    checkpoints = Checkpoints(checkpoint_file or folder.parent / "log-checkpoints.json")
    try:
        sources = build_sources([parse_source(s) for s in specs])
    except Exception as e:  # no Docker engine, no kubeconfig: one line, not a traceback
        print(f"error: --source: cannot connect: {e}", file=sys.stderr, flush=True)
        return EXIT_UNAVAILABLE
    shipper = Shipper(store, sources, checkpoints, stop)
    return shipper.run()
