"""The engine shared by the Kubernetes and Docker sources: follow containers, resume from the store.

A follow=True log response blocks, so each followed container gets a thread that only moves
raw bytes into one queue bounded in bytes; when it is full the thread waits, so memory stays
bounded whatever the log rate. `poll()` takes at most `max_poll_bytes` from the queue per call,
splits them into lines (`LineAssembler`), drops what the store already has (`ResumeFilter`)
and appends the rest.

Each store stream has one writer at a time: when several containers map to one stream (a job
retried in a new pod, a scheduler pod replaced), they are read one after the other, oldest
first, each until its container has ended. That keeps every stream in time order, which the
resume rule needs. A response that ends while its container may still log (a container
restart, a dropped connection) is asked again, from the store's last timestamp; once the
container has stopped, its log is read once more without following, for lines the engine
wrote after it closed the follow response, and then it is done.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from sidecar.store import LogStore
from sidecar.timestamped import FRAGMENT, MAX_LINE, Cursor, LineAssembler, Record, ResumeFilter

log = logging.getLogger(__name__)

_EOF = "eof"  # one response ended; the session may open another (the current container)
_END = "end"  # the follower thread is done


class LogResponse(Protocol):
    """What a thin client returns for one log request: bytes in pieces of any size.

    A response may also have `messages = True`: each piece is then one whole log message, with
    its prefix (Docker's multiplexed frames), which lets the assembler tell message boundaries.
    """

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Target:
    """One container's log, as the last discovery saw it."""

    component: str  # job, scheduler or worker
    name: str | None  # the worker's stream name
    key: str  # unique and stable, e.g. "<pod uid>/<container>"
    order: tuple[Any, ...]  # among targets of one stream, the one to read first sorts first
    readable: bool  # its log can be asked for now (not a pod still pending)
    running: bool  # it may still write (or restart); False once it has ended for good
    ref: Any = None  # what the client needs to open the log
    restarts: int = 0

    @property
    def stream_key(self) -> tuple[str, str | None]:
        return self.component, self.name


class ByteQueue:
    """A FIFO bounded by the bytes it holds. Zero-byte markers always fit."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self.peak = 0
        self._items: deque[tuple[tuple[Any, ...], int]] = deque()
        self._cond = threading.Condition()

    def put(self, item: tuple[Any, ...], nbytes: int, stop: threading.Event) -> bool:
        """Wait for room; False if `stop` was set meanwhile."""
        with self._cond:
            while self.size and self.size + nbytes > self.max_bytes:
                if stop.is_set():
                    return False
                self._cond.wait(0.2)
            self._items.append((item, nbytes))
            self.size += nbytes
            self.peak = max(self.peak, self.size)
            return True

    def take(self, max_bytes: int | None) -> list[tuple[Any, ...]]:
        """What is queued now, up to about `max_bytes` (all of it with None)."""
        out = []
        taken = 0
        with self._cond:
            while self._items and (max_bytes is None or taken < max_bytes):
                item, nbytes = self._items.popleft()
                out.append(item)
                taken += nbytes
            self.size -= taken
            self._cond.notify_all()
        return out


@dataclass
class _Session:
    id: int
    target: Target
    filter: ResumeFilter
    assembler: LineAssembler
    stop: threading.Event = field(default_factory=threading.Event)
    response: LogResponse | None = None
    thread: threading.Thread | None = None
    stored: int = 0  # records it added


@dataclass
class _StreamState:
    targets: dict[str, Target] = field(default_factory=dict)
    done: set[str] = field(default_factory=set)
    ended_at: dict[str, float] = field(default_factory=dict)  # waits for a newer discovery
    swept: set[str] = field(default_factory=set)  # read once more, not followed, after it ended
    session: _Session | None = None
    cursor: Cursor | None = None
    retry_at: float = 0.0


class FollowingSource:
    switched = False  # resumes from the store's timestamps: no position to switch
    """A `Source` over containers whose logs an API serves with timestamps; see the module doc.

    Subclasses give `discover()` (the containers now, as targets) and `open_log()`.
    """

    key: str

    def __init__(
        self,
        *,
        relist_interval: float = 5.0,
        retry_interval: float = 2.0,
        max_queue_bytes: int = 8 << 20,
        max_poll_bytes: int = 4 << 20,
        max_chunk: int = 64 << 10,
        max_line: int = MAX_LINE,
        fragment: int | None = FRAGMENT,
    ) -> None:
        self.relist_interval = relist_interval
        self.retry_interval = retry_interval
        self.max_poll_bytes = max_poll_bytes
        self.max_chunk = min(max_chunk, max_queue_bytes)
        self.max_line = max_line
        self.fragment = fragment
        self.queue = ByteQueue(max_queue_bytes)
        self._streams: dict[tuple[str, str | None], _StreamState] = {}
        self._sessions: dict[int, _Session] = {}
        self._ids = itertools.count(1)
        self._next_discover = 0.0
        self._final_listed = False

    # -- what a subclass provides
    def discover(self) -> Iterable[Target]:
        raise NotImplementedError

    def open_log(
        self, target: Target, since_ns: int | None, *, previous: bool, follow: bool
    ) -> LogResponse:
        """The log from `since_ns` on (None: all of it); `previous`: the instance before a
        restart (Kubernetes)."""
        raise NotImplementedError

    def log_parts(self, target: Target) -> list[bool]:
        """The responses one session reads, in order, as `previous` flags."""
        return [False]

    # -- the Source protocol
    def restore(self, state: dict[str, Any] | None, store: LogStore) -> None:
        """Nothing to take from the checkpoint: the store is the truth, read when a stream opens."""
        for stream in self._streams.values():
            stream.cursor = None

    def poll(self, store: LogStore, final: bool = False) -> int:
        """With `final` (shutdown, the containers have stopped): list them once more and read
        each to its end, one sweep per container; `draining()` says when that is done."""
        now = time.monotonic()
        if not final:
            if now >= self._next_discover:
                self._discover(now)
            self._start_sessions(store, now)
        else:
            if not self._final_listed:
                self._final_listed = True
                self._discover(now)
            self._start_final_sweeps(store)
        batches: dict[tuple[str, str | None], tuple[list[bytes], list[int]]] = {}
        for item in self.queue.take(None if final else self.max_poll_bytes):
            self._handle(item, batches, now)
        if final:  # lines still waiting for their newline go out, unless their read goes on
            draining = self.draining()
            for session in list(self._sessions.values()):
                if self._running(session) or not draining:
                    self._emit(session, session.assembler.finish(), batches)
        count = 0
        pending = list(batches)
        try:
            for key in list(pending):
                lines, stamps = batches[key]
                store.stream(*key).append(lines, stamps)
                pending.remove(key)
                count += len(lines)
        except BaseException:  # e.g. a full disk: read what was not stored again, from the store
            for key in pending:
                self._forget(key, now)
            raise
        return count

    def state(self) -> dict[str, Any]:
        """Informational only (the last timestamp per stream); `restore` reads the store."""
        return {
            "last_timestamp_ns": {
                f"{c}/{n}" if n else c: s.cursor.timestamp_ns
                for (c, n), s in self._streams.items()
                if s.cursor is not None
            }
        }

    def close(self) -> None:
        sessions = list(self._sessions.values())
        for session in sessions:
            session.stop.set()
            if session.response is not None:
                with contextlib.suppress(Exception):
                    session.response.close()
        for session in sessions:
            if session.thread is not None:
                session.thread.join(timeout=1.0)
        self._sessions.clear()

    def _forget(self, key: tuple[str, str | None], now: float) -> None:
        """Drop what this stream's session and cursor assumed was stored."""
        stream = self._streams[key]
        session, stream.session, stream.cursor = stream.session, None, None
        stream.retry_at = now + self.retry_interval
        if session is not None:
            self._sessions.pop(session.id, None)
            session.stop.set()
            if session.response is not None:
                with contextlib.suppress(Exception):
                    session.response.close()

    # -- discovery and sessions
    def _discover(self, now: float) -> None:
        try:
            targets = list(self.discover())
        except Exception as e:  # the API is down: keep following what we follow, ask again later
            log.warning("%s: listing containers failed: %s", self.key, e)
            self._next_discover = now + self.relist_interval
            return
        self._next_discover = now + self.relist_interval
        seen: dict[tuple[str, str | None], dict[str, Target]] = {}
        for target in targets:
            seen.setdefault(target.stream_key, {})[target.key] = target
        for key in set(self._streams) | set(seen):
            stream = self._streams.setdefault(key, _StreamState())
            stream.targets = seen.get(key, {})
            for tkey, ended in list(stream.ended_at.items()):
                if ended >= now:  # only a listing newer than the end of its response can tell
                    continue
                del stream.ended_at[tkey]
                target = stream.targets.get(tkey)
                # Once it has stopped, one more read without follow: an engine may write the
                # last lines after it ended the follow response (Docker does, for a last line
                # without a newline). Then it is done.
                if target is not None and not target.running and tkey in stream.swept:
                    stream.done.add(tkey)
            running = {k for k, t in stream.targets.items() if t.running}
            # a Docker container can be started again after it exited
            stream.done = {k for k in stream.done if k in stream.targets} - running
            stream.swept = {k for k in stream.swept if k in stream.targets} - running

    def draining(self) -> bool:
        """At shutdown: whether the read of a stopped container is still on its way, or has yet
        to start. One still running is not waited for: it may never end."""
        reading = any(not self._running(s) for s in self._sessions.values())
        return reading or any(self._unswept(s) for s in self._streams.values())

    def _running(self, session: _Session) -> bool:
        stream = self._streams[session.target.stream_key]
        target = stream.targets.get(session.target.key, session.target)  # as last listed
        return target.running

    @staticmethod
    def _unswept(stream: _StreamState) -> list[Target]:
        return [
            t
            for t in stream.targets.values()
            if t.readable and not t.running and t.key not in stream.swept
        ]

    def _start_final_sweeps(self, store: LogStore) -> None:
        """Every container read once more without following, oldest first per stream: its
        last lines, and all of one that stopped before it was ever followed."""
        for key, stream in self._streams.items():
            waiting = self._unswept(stream)
            if stream.session is not None or not waiting:
                continue
            target = min(waiting, key=lambda t: t.order)
            if stream.cursor is None:
                stream.cursor = Cursor.of(store.stream(*key))
            stream.swept.add(target.key)
            self._start(stream, target, follow=False)

    def _start_sessions(self, store: LogStore, now: float) -> None:
        for key, stream in self._streams.items():
            if stream.session is not None or now < stream.retry_at:
                continue
            waiting = [
                t
                for t in stream.targets.values()
                if t.key not in stream.done and (t.readable or t.running)
            ]
            if not waiting:
                continue
            target = min(waiting, key=lambda t: t.order)
            if target.key in stream.ended_at or not target.readable:
                continue  # the oldest first: later targets of this stream wait for it
            if stream.cursor is None:
                stream.cursor = Cursor.of(store.stream(*key))
            follow = target.running and target.key not in stream.swept
            if not follow:
                stream.swept.add(target.key)
            self._start(stream, target, follow)

    def _start(self, stream: _StreamState, target: Target, follow: bool) -> None:
        cursor = stream.cursor
        assert cursor is not None
        session = _Session(
            id=next(self._ids),
            target=target,
            filter=ResumeFilter(cursor),
            assembler=LineAssembler(self.max_line, self.fragment, cursor.timestamp_ns),
        )
        since = cursor.timestamp_ns or None
        session.thread = threading.Thread(
            target=self._follow,
            args=(session, since, follow),
            name=f"{self.key}:{target.key}",
            daemon=True,  # a response blocked in a read must not keep the sidecar alive
        )
        stream.session = session
        self._sessions[session.id] = session
        session.thread.start()

    def _follow(self, session: _Session, since: int | None, follow: bool) -> None:
        """The follower thread: raw bytes into the queue, then one END marker."""
        error = None
        try:
            for previous in self.log_parts(session.target):
                try:
                    response = self.open_log(
                        session.target, since, previous=previous, follow=follow and not previous
                    )
                except Exception:
                    if previous:  # there may be no earlier instance to read
                        continue
                    raise
                session.response = response
                try:
                    if not self._pump(session, response):
                        return
                finally:
                    with contextlib.suppress(Exception):
                        response.close()
                self.queue.put((session.id, _EOF), 0, session.stop)
        except Exception as e:
            error = f"{type(e).__name__}: {e}"
        finally:
            self.queue.put((session.id, _END, error), 0, session.stop)

    def _pump(self, session: _Session, response: LogResponse) -> bool:
        messages = getattr(response, "messages", False)
        for chunk in response:
            for i in range(0, len(chunk), self.max_chunk):
                piece = chunk[i : i + self.max_chunk]
                item = (session.id, piece, messages and i == 0)
                if not self.queue.put(item, len(piece), session.stop):
                    return False
            if session.stop.is_set():
                return False
        return True

    # -- from the queue to the store
    def _handle(
        self,
        item: tuple[Any, ...],
        batches: dict[tuple[str, str | None], tuple[list[bytes], list[int]]],
        now: float,
    ) -> None:
        session = self._sessions.get(item[0])
        if session is None:
            return
        payload = item[1]
        if isinstance(payload, bytes):
            self._emit(session, session.assembler.feed(payload, item[2]), batches)
            return
        self._emit(session, session.assembler.finish(), batches)
        # the next response of this session starts from the session's `since` again: it may
        # repeat what this one gave (two reads of one log), so it is filtered afresh
        cursor = self._streams[session.target.stream_key].cursor
        assert cursor is not None
        session.filter = ResumeFilter(cursor)
        if payload == _END:
            del self._sessions[session.id]
            stream = self._streams[session.target.stream_key]
            stream.session = None
            stream.ended_at[session.target.key] = now
            # nothing new (a crash-looping container, an idle one): ask less often
            wait = self.retry_interval if session.stored else self.relist_interval
            stream.retry_at = now + wait
            self._next_discover = min(self._next_discover, now + self.retry_interval)
            if item[2]:
                log.warning("%s: log of %s ended: %s", self.key, session.target.key, item[2])

    def _emit(
        self,
        session: _Session,
        records: list[Record],
        batches: dict[tuple[str, str | None], tuple[list[bytes], list[int]]],
    ) -> None:
        if not records:
            return
        key = session.target.stream_key
        cursor = self._streams[key].cursor
        assert cursor is not None
        lines, stamps = batches.setdefault(key, ([], []))
        for record in records:
            kept = session.filter.apply(record)
            if kept is None or not kept.data:
                continue
            cursor.advance(kept)
            session.stored += 1
            lines.append(kept.data)
            stamps.append(kept.timestamp_ns)
