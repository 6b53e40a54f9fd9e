"""Tail the files of one component (job, scheduler, worker) into the store, exactly once.

Files are known by identity, not by path: device+inode plus a fingerprint of the head (as
Vector does), so a renamed file is still the same file, a reused inode is not, and the copy made
by copytruncate is recognised as the content we were reading.

Each store stream has one active file at a time. The store holds exactly the bytes read from
it, so after a crash the active file's position is its last checkpointed position plus however
much the stream grew since: no line is read twice. Moving to the next file of a stream (after a
rotation or a truncation) happens only right after a checkpoint, so that rule always holds.
"""

from __future__ import annotations

import glob
import hashlib
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any, BinaryIO

from sidecar.store import LogStore, whole_lines

HEAD_BYTES = 256  # the fingerprint covers this much of a file's start
READ_CHUNK = 256 << 10  # per read: it stays in the CPU's cache; memory stays bounded
ROUND_BUDGET = 32 << 20  # per poll, over all files: then the store syncs and we checkpoint
# (a sync and a checkpoint cost about 2 ms: every 8 MB, they were a third of the shipping time;
# larger reads were slower, each a fresh allocation to fault in)
MAX_LINE = 1 << 20  # a longer line is stored in pieces of this size, flagged partial
ROTATE_WAIT = 1.0  # seconds an older file must stay unmodified before we go on to its successor
FINGERPRINT_MEMORY = 300.0  # seconds a truncated file's head is kept, to recognise its copy
FORGET_AFTER = 60.0  # seconds a file must stay missing before we forget we read it
ROTATION_SUFFIX = re.compile(r"(\.\d+|-\d{8}(\d{2,6})?|\.\d{4}-?\d{2}-?\d{2}\S*|\.gz)$")


def stream_name(path: str) -> str:
    """`workers/worker-0.log.1` → `worker-0`: rotated siblings feed the stream of the original."""
    name = os.path.basename(path)
    while (stripped := ROTATION_SUFFIX.sub("", name)) != name:
        name = stripped
    return name[: -len(".log")] if name.endswith(".log") else name


def rotation_rank(path: str) -> int:
    """0 for a live file, N for `name.N`, 1 for other rotated names (`name-20261127`)."""
    match = re.search(r"\.(\d+)(\.gz)?$", path)
    if match and not path.endswith(".log"):
        return int(match.group(1))
    return 0 if stream_name(path) + ".log" == os.path.basename(path) else 1


def bounded(line: bytes) -> list[bytes]:
    return [line[i : i + MAX_LINE] for i in range(0, len(line), MAX_LINE)] or [line]


def open_file(path: str, ident: tuple[int, int] | None):
    """Open `path` only if it is still the file we stat-ed: a rotation between the stat and the
    open would otherwise hand us its successor's bytes at the old file's offset."""
    try:
        f = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    except OSError:
        return None
    st = os.fstat(f.fileno())
    if ident is not None and (st.st_dev, st.st_ino) != ident:
        f.close()
        return None
    return f


def fingerprint(path: str, length: int, ident: tuple[int, int] | None = None) -> str | None:
    f = open_file(path, ident)
    if f is None:
        return None
    with f:
        head = f.read(length)
    if len(head) < length:
        return None
    return hashlib.blake2b(head, digest_size=16).hexdigest()


@dataclass
class TrackedFile:
    dev: int
    ino: int
    stream: str
    head_len: int = 0
    head: str = ""
    offset: int = 0  # bytes of this file that are in the store
    done: bool = False  # fully read, and a successor took over
    order: float = 0.0  # mtime when first seen: older files of a stream are read first
    shadow_of: list[int] | None = None  # a copy of this live file: read only if it is truncated
    path: str = field(default="", compare=False)

    def same_content(self, path: str, size: int) -> bool:
        if self.head_len == 0:
            return True
        head = fingerprint(path, self.head_len, (self.dev, self.ino))
        return size >= self.head_len and head in (self.head, None)  # None: it moved; next time


class FileSource:
    """All files matching `pattern`, for `component`."""

    def __init__(self, component: str, pattern: str, rotate_wait: float = ROTATE_WAIT) -> None:
        self.component = component
        self.pattern = pattern
        self.rotate_wait = rotate_wait
        self.key = f"files:{component}:{pattern}"
        self.files: list[TrackedFile] = []
        self.active: dict[str, TrackedFile] = {}
        self.missing_since: dict[tuple[int, int], float] = {}
        self.budget = ROUND_BUDGET
        self.switched = False
        self.store: LogStore | None = None
        self._buffer: bytearray | None = None  # what a read fills, for all of this source's files
        self._held: dict[tuple[int, int], BinaryIO] = {}  # the files this round reads

    # --- checkpoints --------------------------------------------------------------------

    def draining(self) -> bool:
        return False  # a final poll reads the files to their end itself

    def state(self) -> dict[str, Any]:
        """Called right after the store synced: each active file is anchored to its stream's
        size now, so that a restart can tell what reached the store after this checkpoint."""
        assert self.store is not None
        return {
            "files": [asdict(f) for f in self.files],
            "active": {
                name: [f.dev, f.ino, f.offset, self._stream(self.store, name).size]
                for name, f in self.active.items()
            },
        }

    def restore(self, state: dict[str, Any] | None, store: LogStore) -> None:
        self.store = store
        if not state:
            return
        self.files = [TrackedFile(**f) for f in state.get("files", [])]
        for name, (dev, ino, offset, size) in state.get("active", {}).items():
            f = next((t for t in self.files if (t.dev, t.ino) == (dev, ino)), None)
            if f is not None:
                self.active[name] = f
                # what reached the store after the checkpoint came from this file: skip it
                f.offset = offset + max(self._stream(store, name).size - size, 0)

    # --- discovery ------------------------------------------------------------------------

    def _stream(self, store: LogStore, name: str):
        if self.component == "worker":
            return store.stream("worker", name)
        return store.stream(self.component)

    def _name(self, path: str) -> str:
        return stream_name(path) if self.component == "worker" else self.component

    def _scan(self) -> dict[tuple[int, int], tuple[str, os.stat_result]]:
        found = {}
        for path in glob.glob(self.pattern):
            try:
                st = os.stat(path)
            except OSError:
                continue
            found[(st.st_dev, st.st_ino)] = (path, st)
        return found

    def _discover(self, found: dict[tuple[int, int], tuple[str, os.stat_result]]) -> None:
        by_id = {(f.dev, f.ino): f for f in self.files}
        for ident, (path, st) in sorted(found.items(), key=lambda i: i[1][1].st_mtime):
            tracked = by_id.get(ident)
            if tracked is None:
                self.files.append(self._adopt(path, st))
                continue
            tracked.path = path
            if st.st_size < tracked.offset or not tracked.same_content(path, st.st_size):
                self._truncated(tracked)  # or the inode was reused: the same from here
            self._refingerprint(tracked, st.st_size)
        # Forget a file only after a lasting absence: one that is missing from a single scan
        # is usually between two renames, and forgetting it would read it again as new.
        clock = time.monotonic()
        for f in self.files:
            if (f.dev, f.ino) in found:
                self.missing_since.pop((f.dev, f.ino), None)
            else:
                self.missing_since.setdefault((f.dev, f.ino), clock)
        self.files = [
            f
            for f in self.files
            if (f.dev, f.ino) in found
            or f in self.active.values()
            or (f.dev < 0 and time.time_ns() + f.ino < FINGERPRINT_MEMORY * 1e9)
            or (f.dev >= 0 and clock - self.missing_since[(f.dev, f.ino)] < FORGET_AFTER)
        ]
        known = {(f.dev, f.ino) for f in self.files}
        self.missing_since = {k: v for k, v in self.missing_since.items() if k in known}

    def _adopt(self, path: str, st: os.stat_result) -> TrackedFile:
        name = self._name(path)
        # mtimes are coarse: a rotated file and its successor may share one, so the rotation
        # rank (name.2 is older than name.1, older than name) breaks the tie
        order = st.st_mtime - rotation_rank(path) * 1e-6
        new = TrackedFile(st.st_dev, st.st_ino, name, order=order, path=path)
        self._refingerprint(new, st.st_size)
        # copytruncate makes a new inode with the head of a file we were reading
        for twin in self.files:
            if twin.stream != name or not twin.head_len or new.head_len < twin.head_len:
                continue
            if fingerprint(path, twin.head_len, (new.dev, new.ino)) != twin.head:
                continue
            if twin.dev < 0:  # the original was truncated already: go on where it stopped
                new.offset, new.order = twin.offset, twin.order
                self.files.remove(twin)
            else:  # the original is still live: the copy waits, unread, for its truncation
                new.shadow_of, new.done = [twin.dev, twin.ino], True
            break
        return new

    def _refingerprint(self, f: TrackedFile, size: int) -> None:
        if f.head_len < HEAD_BYTES and size > f.head_len:
            length = min(size, HEAD_BYTES)
            head = fingerprint(f.path, length, (f.dev, f.ino))
            if head is not None:
                f.head_len, f.head = length, head

    def _truncated(self, f: TrackedFile) -> None:
        """copytruncate, or a plain truncation: what we had not read yet lives on in a copy."""
        copy = next((c for c in self.files if c.shadow_of == [f.dev, f.ino]), None)
        if copy is not None:  # read the copy from where we stopped, before the new content
            copy.shadow_of, copy.done, copy.offset, copy.order = None, False, f.offset, f.order
        else:  # remember the head, to recognise a copy that appears later; the copy takes the
            # original's place in the order, before the new content (dev -1, and the inode
            # field holds when it was remembered, for forgetting it)
            self.files.append(
                TrackedFile(
                    -1, -time.time_ns(), f.stream, f.head_len, f.head, f.offset, True, f.order
                )
            )
        # The new content comes right after the copy, and before anything rotated later: not
        # "now", which may be long after the truncation if we noticed it late (at a restart).
        f.head_len, f.head, f.offset, f.order = 0, "", 0, f.order + 1e-3
        if self.active.get(f.stream) is f:
            del self.active[f.stream]  # the switch to what comes next waits for a checkpoint

    # --- reading ----------------------------------------------------------------------------

    def poll(self, store: LogStore, final: bool = False) -> int:
        self.budget = ROUND_BUDGET
        before = self._reading()
        found = self._scan()
        self._discover(found)
        lines = 0
        try:
            for name in sorted({f.stream for f in self.files}):
                lines += self._poll_stream(store, name, found, final)
        finally:
            for fh in self._held.values():
                fh.close()
            self._held.clear()
        self.switched = self._reading() != before
        return lines

    def _reading(self) -> dict[str, tuple[int, int]]:
        return {name: (f.dev, f.ino) for name, f in self.active.items()}

    def _queue(self, name: str) -> list[TrackedFile]:
        return sorted(
            (f for f in self.files if f.stream == name and not f.done and f.dev >= 0),
            key=lambda f: f.order,
        )

    def _poll_stream(self, store: LogStore, name: str, found: dict, final: bool) -> int:
        queue = self._queue(name)
        active = self.active.get(name)
        stale = active is None or active.done or active not in self.files
        if stale or (queue and queue[0] is not active and queue[0].order < active.order):
            # The oldest unfinished file goes first (a copytruncate copy seen late is older than
            # the content after it). A switch: no bytes of it until it is checkpointed.
            if not queue:
                return 0
            self.active[name] = queue[0]
            return 0
        lines, at_end = 0, False
        while self.budget > 0:  # this file, up to the round's budget
            data, at_end = self._read(active, found)
            stored = self._store(store, name, active, data, final and at_end)
            lines += stored
            if not stored or at_end:
                break
        if lines or not any(f is not active for f in queue):
            return lines
        if self._finished(active, found, final, at_end):
            data, at_end = self._read(active, found)  # a last line without its newline
            self._store(store, name, active, data, at_end)
            active.done = True
            del self.active[name]
            lines += 1  # a switch is progress, even without a line
        return lines

    def _finished(self, f: TrackedFile, found: dict, final: bool, at_end: bool) -> bool:
        """An older file with a successor is finished once read to its end and left alone for
        a while, judged by its mtime, which (unlike a timer) survives a sidecar restart. A file
        missing from one scan may just be between two renames: only a lasting absence counts."""
        entry = found.get((f.dev, f.ino))
        if entry is None:
            since = self.missing_since.setdefault((f.dev, f.ino), time.monotonic())
            return time.monotonic() - since >= self.rotate_wait
        self.missing_since.pop((f.dev, f.ino), None)
        return at_end and (final or time.time() - entry[1].st_mtime >= self.rotate_wait)

    def _read(self, f: TrackedFile, found: dict) -> tuple[bytes, bool]:
        """The bytes from the end of the last stored line on, and whether they reach the end
        of the file (as the scan saw it). A line not yet complete stays in the file, not in
        memory, and is read again next time."""
        entry = found.get((f.dev, f.ino))
        if entry is None:
            return b"", False
        path, st = entry
        if st.st_size <= f.offset:
            return b"", True
        fh = self._held.get((f.dev, f.ino)) or open_file(path, (f.dev, f.ino))
        if fh is None:
            return b"", False  # renamed since the scan: the next scan finds it again
        self._held[f.dev, f.ino] = fh  # open until the round ends: a busy file is read often
        # Into one buffer, reused: a fresh megabyte per read costs its page faults every time.
        # A read is small enough to stay in the CPU's cache while its newlines are counted and
        # it is written to the store; only a line longer than that is read on, to MAX_LINE.
        if self._buffer is None:
            self._buffer = bytearray(max(READ_CHUNK, MAX_LINE))
        view = memoryview(self._buffer)[: min(len(self._buffer), st.st_size - f.offset)]
        got = os.preadv(fh.fileno(), [view[:READ_CHUNK]], f.offset)
        if got == READ_CHUNK and self._buffer.find(b"\n", 0, got) < 0:
            got += os.preadv(fh.fileno(), [view[got:]], f.offset + got)
        self.budget -= got
        return view[:got], f.offset + got >= st.st_size

    def _store(
        self, store: LogStore, name: str, f: TrackedFile, data: memoryview | bytes, final: bool
    ) -> int:
        """Store the complete lines of `data` (which the next read overwrites); with `final`
        (at a file's end) also the last, unterminated one. Returns the number of lines."""
        stream = self._stream(store, name)
        cut, lines = whole_lines(data)  # lines end at \n only; \r stays inside
        if cut:
            complete = data[:cut]
            # no line of a read no longer than MAX_LINE can be longer: no look at each line
            if len(data) <= MAX_LINE:
                stream.append_block(complete, lines)
            else:  # it may hold a very long line: store such lines in bounded pieces
                parts = bytes(complete).split(b"\n")[:-1]
                stream.append([piece for p in parts for piece in bounded(p + b"\n")])
            f.offset += cut
        elif len(data) >= MAX_LINE:  # a long line still without its end: a bounded piece
            stream.append([bytes(data[:MAX_LINE])])
            f.offset += MAX_LINE
            return 1
        if final and cut < len(data):
            stream.append([bytes(data[cut:])])
            f.offset += len(data) - cut
            lines += 1
        return lines

    def close(self) -> None:
        pass
