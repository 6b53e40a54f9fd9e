"""The log store: `.daskstep/logs/{job,scheduler,engine}.log` and `workers/<name>.log`.

Each `.log` holds the program's bytes exactly, with no prefix. Beside it, `<name>.log.index`
holds fixed-size records, each for a block of whole lines: where the block ends in the `.log`,
flags, a timestamp (nanoseconds), and how many lines the stream has up to the block's end.
A file source writes one record per read (a megabyte of lines costs one newline count, not an
entry per line: shipping runs near a plain copy's speed); a timestamped source (Docker,
Kubernetes) writes one per line, since each line has its own time. A line's sequence number
counts from 1; a reader finds a line's block by bisection, without reading the ones before.

The store is the truth after a crash: the `.log` is written before its index, a torn index
record is cut off, and lines the index misses are indexed again from the `.log`. Sources then
skip what the store already has.
"""

from __future__ import annotations

import contextlib
import os
import struct
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

try:  # counts the newlines of a megabyte without a Python object per line
    import numpy as np
except ImportError:  # pragma: no cover
    np = None

RECORD = struct.Struct("<QQQ")  # end offset | flags << 56, timestamp in ns, lines so far
OFFSET_MASK = (1 << 56) - 1
PARTIAL = 1  # the block's last line has no newline (a cut long line, or a last line at shutdown)
COMPONENTS = ("job", "scheduler", "worker", "engine")  # engine: cwltool or snakemake
INDEX_SUFFIX = ".index"


@dataclass(frozen=True)
class Line:
    seq: int
    timestamp_ns: int
    data: bytes  # as written, with its newline unless `partial`
    partial: bool

    def text(self) -> str:
        """For display: bytes that are not UTF-8 become replacement characters."""
        return self.data.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class Block:
    end: int  # offset just past the block in the .log
    flags: int
    timestamp_ns: int
    lines: int  # lines in the stream up to `end`


def index_path(log_path: Path) -> Path:
    return log_path.with_name(log_path.name + INDEX_SUFFIX)


def _unpack(data: bytes, at: int = 0) -> Block:
    packed, ts, lines = RECORD.unpack_from(data, at)
    return Block(packed & OFFSET_MASK, packed >> 56, ts, lines)


def _pack(end: int, flags: int, ts: int, lines: int) -> bytes:
    return RECORD.pack(end | flags << 56, ts, lines)


class Index:
    """A stream's index as far as it is written now, read through one descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.count = os.fstat(fd).st_size // RECORD.size  # a record being written is left out

    def __getitem__(self, i: int) -> Block:
        data = os.pread(self.fd, RECORD.size, i * RECORD.size)
        if len(data) < RECORD.size:
            raise IndexError(i)
        return _unpack(data)

    def lines(self) -> int:
        return self[self.count - 1].lines if self.count else 0

    def find(self, seq: int) -> int:
        """The record holding line `seq` (1-based): the first whose running count reaches it."""
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            if self[mid].lines < seq:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def blocks(self, first: int, last: int) -> list[Block]:
        """Records first..last (0-based, inclusive), in one read."""
        data = os.pread(self.fd, (last - first + 1) * RECORD.size, first * RECORD.size)
        return [_unpack(data, at) for at in range(0, len(data) - RECORD.size + 1, RECORD.size)]


def split_block(data: bytes, partial: bool) -> list[bytes]:
    """The lines of a block, each with its newline (the last without one if `partial`)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if partial and parts[-1]:
        lines.append(parts[-1])
    return lines


def whole_lines(data: bytes | bytearray | memoryview) -> tuple[int, int]:
    """(the offset just past the last newline, how many newlines): all a block's record needs.
    A vectorised count: a Python shipper is limited by what it does per line."""
    if np is None:  # pragma: no cover
        raw = bytes(data)
        return raw.rfind(b"\n") + 1, raw.count(b"\n")
    newline = np.frombuffer(data, dtype=np.uint8) == 10
    count = int(np.count_nonzero(newline))
    if not count:
        return 0, 0
    window = 4096
    while True:  # the last newline is almost always near the end
        tail = np.flatnonzero(newline[-window:])
        if len(tail):
            return len(newline) - min(window, len(newline)) + int(tail[-1]) + 1, count
        window *= 16


class Stream:
    """One `.log` and its index, opened for appending."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.idx_path = index_path(log_path)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._log = os.open(log_path, flags, 0o644)
        self._idx = os.open(self.idx_path, flags, 0o644)
        self.size = 0
        self.lines = 0
        self.last_timestamp_ns = 0
        self.dirty = False
        self._recover()

    def _recover(self) -> None:
        idx_size = os.fstat(self._idx).st_size
        if idx_size % RECORD.size:
            os.ftruncate(self._idx, idx_size - idx_size % RECORD.size)  # torn by a crash
        self.size = os.fstat(self._log).st_size
        with open(self.idx_path, "rb") as f:
            index = Index(f.fileno())
            last = index[index.count - 1] if index.count else Block(0, 0, 0, 0)
            if last.end > self.size:  # only after a lost write of the .log: trust the .log
                keep = index.count - 1
                while keep and index[keep - 1].end > self.size:
                    keep -= 1
                os.ftruncate(self._idx, keep * RECORD.size)
                return self._recover()
        self.lines, self.last_timestamp_ns = last.lines, last.timestamp_ns
        if last.end < self.size:
            self._index_tail(last.end)

    def _index_tail(self, start: int) -> None:
        """Lines written to the .log but not indexed before a crash, as one block. A tail
        without its newline was torn by a kill in the middle of a write: it is cut off, and
        read again. Stamped with the last known time, not now: timestamped sources resume
        from the last timestamp, and a later one would make them skip lines never stored."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            tail = f.read()
        cut, count = whole_lines(tail)
        if cut < len(tail):
            os.ftruncate(self._log, start + cut)
            self.size = start + cut
        if count:
            self._write_records(_pack(start + cut, 0, self.last_timestamp_ns, self.lines + count))
            self.lines += count

    def _write_records(self, records: bytes) -> None:
        os.write(self._idx, records)
        self.dirty = True

    def _write_log(self, data: bytes | bytearray | memoryview) -> None:
        written = 0
        with memoryview(data) as view:
            while written < len(view):
                written += os.write(self._log, view[written:])
        self.size += written
        self.dirty = True

    def append(self, lines: list[bytes], timestamps_ns: Sequence[int] | None = None) -> None:
        """Append lines (ending in a newline) or cut pieces (not ending in one), a record
        each: each may have its own timestamp."""
        if not lines:
            return
        stamps = timestamps_ns if timestamps_ns is not None else [time.time_ns()] * len(lines)
        self._write_log(b"".join(lines))
        end, count, records = self.size - sum(map(len, lines)), self.lines, []
        for line, ts in zip(lines, stamps, strict=True):
            end, count = end + len(line), count + 1
            records.append(_pack(end, 0 if line.endswith(b"\n") else PARTIAL, ts, count))
        self._write_records(b"".join(records))
        self.lines, self.last_timestamp_ns = count, stamps[-1]

    def append_block(self, data: bytes | bytearray | memoryview, lines: int) -> None:
        """Append `lines` whole lines (`data` ends with a newline) as one record, stamped now."""
        if not lines:
            return
        self._write_log(data)
        stamp = time.time_ns()
        self._write_records(_pack(self.size, 0, stamp, self.lines + lines))
        self.lines += lines
        self.last_timestamp_ns = stamp

    def trailing_timestamp(self) -> tuple[int, int]:
        """(last timestamp, how many lines at the end carry it): where a timestamped source
        (Kubernetes, Docker) resumes, since those sources may give several lines the same time."""
        if not self.lines:
            return 0, 0
        with open(self.idx_path, "rb") as f:
            index = Index(f.fileno())
            first = max(0, index.count - 4096)
            blocks = index.blocks(first, index.count - 1)
            before = index[first - 1].lines if first else 0
        for block in reversed(blocks[:-1]):
            if block.timestamp_ns != self.last_timestamp_ns:
                before = block.lines
                break
        return self.last_timestamp_ns, self.lines - before

    def take_dirty(self) -> list[int]:
        """The descriptors to fsync for what was appended since the last call (or sync)."""
        if not self.dirty:
            return []
        self.dirty = False
        return [self._log, self._idx]

    def sync(self) -> None:
        """Make what was appended durable; only then may a checkpoint move past it."""
        if self.dirty:
            os.fsync(self._log)
            os.fsync(self._idx)
            self.dirty = False

    def close(self) -> None:
        self.sync()
        os.close(self._log)
        os.close(self._idx)


class LogStore:
    """The store of one workspace: `root` is `<workspace>/.daskstep/logs`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._streams: dict[tuple[str, str | None], Stream] = {}

    def path(self, component: str, name: str | None = None) -> Path:
        if component == "worker":
            if not name:
                raise ValueError("a worker stream needs the worker's name")
            return self.root / "workers" / f"{name}.log"
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}")
        return self.root / f"{component}.log"

    def stream(self, component: str, name: str | None = None) -> Stream:
        key = (component, name if component == "worker" else None)
        stream = self._streams.get(key)  # asked once per read: no Path made
        if stream is None:
            stream = self._streams[key] = Stream(self.path(component, name))
        return stream

    def sync(self) -> None:
        for stream in self._streams.values():
            stream.sync()

    def take_dirty(self) -> list[int]:
        return [fd for stream in self._streams.values() for fd in stream.take_dirty()]

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()


def total_lines(log_path: Path) -> int:
    """How many lines the stream's index holds now; 0 without one."""
    try:
        with open(index_path(log_path), "rb") as f:
            return Index(f.fileno()).lines()
    except OSError:
        return 0


def read_lines(log_path: Path, since: int = 0) -> Iterator[Line]:
    """The lines after sequence number `since`, as far as the index goes right now."""
    with contextlib.ExitStack() as files:
        try:
            idx = files.enter_context(open(index_path(log_path), "rb"))
            log = files.enter_context(open(log_path, "rb"))
        except OSError:
            return
        index = Index(idx.fileno())
        i = index.find(since + 1)
        before = index[i - 1] if i else Block(0, 0, 0, 0)
        while i < index.count:
            for block in index.blocks(i, min(index.count, i + 1024) - 1):
                data = os.pread(log.fileno(), block.end - before.end, before.end)
                if len(data) < block.end - before.end:
                    return  # the .log is behind its index: stop at what is really there
                lines = split_block(data, bool(block.flags & PARTIAL))
                for seq, line in enumerate(lines, start=before.lines + 1):
                    if seq > since:
                        yield Line(seq, block.timestamp_ns, line, not line.endswith(b"\n"))
                before, i = block, i + 1
