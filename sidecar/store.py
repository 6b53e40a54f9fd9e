"""The log store: `.daskstep/logs/{job,scheduler,engine}.log` and `workers/<name>.log`.

Each `.log` holds the program's bytes exactly, with no prefix. Beside it, `<name>.log.idx` holds
one fixed-size record per line: where the line ends in the `.log`, flags, and a timestamp
(nanoseconds). A line's sequence number is its record number, from 1, so a reader can seek to
any line without reading the ones before it.

The store is the truth after a crash: the `.log` is written before its index, a torn index
record is cut off, and lines the index misses are indexed again from the `.log`. Sources then
skip what the store already has.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, repeat

try:  # finds the newlines of a megabyte without a Python object per line
    import numpy as np
except ImportError:  # pragma: no cover
    np = None
from pathlib import Path

RECORD = struct.Struct("<QQ")  # end offset | flags << 56, timestamp in ns
OFFSET_MASK = (1 << 56) - 1
PARTIAL = 1  # the record does not end with a newline (a cut long line, or a last line at shutdown)
COMPONENTS = ("job", "scheduler", "worker", "engine")  # engine: cwltool or snakemake


@dataclass(frozen=True)
class Line:
    seq: int
    timestamp_ns: int
    data: bytes  # as written, with its newline unless `partial`
    partial: bool

    def text(self) -> str:
        """For display: bytes that are not UTF-8 become replacement characters."""
        return self.data.decode("utf-8", errors="replace")


class Stream:
    """One `.log` and its index, opened for appending."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.idx_path = log_path.with_name(log_path.name + ".idx")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        self._log = os.open(log_path, flags, 0o644)
        self._idx = os.open(self.idx_path, flags, 0o644)
        self.size = 0
        self.records = 0
        self.last_timestamp_ns = 0
        self.dirty = False
        self._recover()

    def _recover(self) -> None:
        idx_size = os.fstat(self._idx).st_size
        whole = idx_size - idx_size % RECORD.size
        if whole != idx_size:
            os.ftruncate(self._idx, whole)  # a record torn by a crash
        self.records = whole // RECORD.size
        self.size = os.fstat(self._log).st_size
        indexed = 0
        if self.records:
            with open(self.idx_path, "rb") as f:
                f.seek((self.records - 1) * RECORD.size)
                packed, self.last_timestamp_ns = RECORD.unpack(f.read(RECORD.size))
            indexed = packed & OFFSET_MASK
        if indexed > self.size:  # only after a lost write of the .log: trust the .log
            self._drop_records_beyond(self.size)
        elif indexed < self.size:
            self._index_tail(indexed)

    def _drop_records_beyond(self, size: int) -> None:
        """Keep the records whose line is wholly in the .log; the rest is indexed again."""
        with open(self.idx_path, "rb") as f:
            data = f.read(self.records * RECORD.size)
        keep = 0
        for i in range(self.records):
            if RECORD.unpack_from(data, i * RECORD.size)[0] & OFFSET_MASK > size:
                break
            keep = i + 1
        os.ftruncate(self._idx, keep * RECORD.size)
        self._recover()

    def _index_tail(self, start: int) -> None:
        """Lines written to the .log but not indexed before a crash. A tail without its newline
        was torn by a kill in the middle of a write: it is cut off, and read again."""
        with open(self.log_path, "rb") as f:
            f.seek(start)
            tail = f.read()
        cut = tail.rfind(b"\n") + 1
        if cut < len(tail):
            os.ftruncate(self._log, start + cut)
            self.size = start + cut
        # Stamped with the last known time, not now: timestamped sources resume from the last
        # timestamp, and a later one would make them skip lines they never stored.
        stamp = self.last_timestamp_ns
        records, offset = [], start
        for line in tail[:cut].split(b"\n")[:-1]:
            offset += len(line) + 1
            records.append((offset, 0, stamp))
        self._write_index(records)

    def _write_index(self, records: list[tuple[int, int, int]]) -> None:
        if not records:
            return
        os.write(
            self._idx, b"".join(RECORD.pack(end | flags << 56, ts) for end, flags, ts in records)
        )
        self.records += len(records)
        self.last_timestamp_ns = records[-1][2]

    def append(self, lines: list[bytes], timestamps_ns: list[int] | None = None) -> None:
        """Append whole lines (ending in a newline) or cut pieces (not ending in one)."""
        if not lines:
            return
        partial = [i for i, line in enumerate(lines) if not line.endswith(b"\n")]
        ends = list(accumulate(map(len, lines)))
        self.append_block(b"".join(lines), ends, partial, timestamps_ns)

    def append_block(
        self,
        data: bytes,
        ends: Sequence[int],
        partial: Sequence[int] = (),
        timestamps_ns: Sequence[int] | None = None,
    ) -> None:
        """Append `data`, whose records end at `ends` (offsets within `data`); `partial`
        lists the records that do not end in a newline. No Python loop per line: a busy
        worker writes tens of thousands of lines a second."""
        if not len(ends):
            return
        written = 0
        while written < len(data):
            written += os.write(self._log, data[written:])
        stamp = time.time_ns()
        records = _records(ends, self.size, partial, timestamps_ns, stamp)
        os.write(self._idx, records)
        self.size += len(data)
        self.records += len(ends)
        self.last_timestamp_ns = timestamps_ns[-1] if timestamps_ns else stamp
        self.dirty = True

    def trailing_timestamp(self) -> tuple[int, int]:
        """(last timestamp, how many records at the end carry it): where a timestamped source
        (Kubernetes, Docker) resumes, since those sources may give several lines the same time."""
        if not self.records:
            return 0, 0
        count, back = 0, min(self.records, 4096)
        with open(self.idx_path, "rb") as f:
            f.seek((self.records - back) * RECORD.size)
            data = f.read(back * RECORD.size)
        for i in range(back - 1, -1, -1):
            if RECORD.unpack_from(data, i * RECORD.size)[1] != self.last_timestamp_ns:
                break
            count += 1
        return self.last_timestamp_ns, count

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
        self._streams: dict[Path, Stream] = {}

    def path(self, component: str, name: str | None = None) -> Path:
        if component == "worker":
            if not name:
                raise ValueError("a worker stream needs the worker's name")
            return self.root / "workers" / f"{name}.log"
        if component not in COMPONENTS:
            raise ValueError(f"unknown component {component!r}")
        return self.root / f"{component}.log"

    def stream(self, component: str, name: str | None = None) -> Stream:
        path = self.path(component, name)
        if path not in self._streams:
            self._streams[path] = Stream(path)
        return self._streams[path]

    def sync(self) -> None:
        for stream in self._streams.values():
            stream.sync()

    def take_dirty(self) -> list[int]:
        return [fd for stream in self._streams.values() for fd in stream.take_dirty()]

    def close(self) -> None:
        for stream in self._streams.values():
            stream.close()
        self._streams.clear()


def line_ends(data: bytes) -> Sequence[int]:
    """Where each line of `data` ends (just past its newline), found without a bytes object
    per line: that is what limits a Python log shipper."""
    if np is not None:
        return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10) + 1
    return list(accumulate(len(part) + 1 for part in bytes(data).split(b"\n")[:-1]))


def longest(ends: Sequence[int]) -> int:
    if np is not None and isinstance(ends, np.ndarray):
        return int(np.diff(ends, prepend=0).max()) if len(ends) else 0
    return max((b - a for a, b in zip([0, *ends], ends, strict=False)), default=0)


def _records(
    ends: Sequence[int],
    base: int,
    partial: Sequence[int],
    timestamps_ns: Sequence[int] | None,
    stamp: int,
) -> bytes:
    if np is not None:
        records = np.empty((len(ends), 2), dtype="<u8")
        records[:, 0] = np.asarray(ends, dtype=np.uint64) + np.uint64(base)
        records[:, 1] = timestamps_ns if timestamps_ns is not None else stamp
        for i in partial:
            records[i, 0] |= np.uint64(PARTIAL << 56)
        return records.tobytes()
    packed = array("Q", (base + end for end in ends))
    for i in partial:
        packed[i] |= PARTIAL << 56
    stamps = timestamps_ns or repeat(stamp, len(ends))
    out = array("Q", chain.from_iterable(zip(packed, stamps, strict=True)))
    if sys.byteorder != "little":
        out.byteswap()
    return out.tobytes()


def read_lines(log_path: Path, since: int = 0) -> Iterator[Line]:
    """The lines after sequence number `since`, as far as the index goes right now."""
    idx_path = log_path.with_name(log_path.name + ".idx")
    if not (idx_path.exists() and log_path.exists()):
        return
    with open(idx_path, "rb") as idx, open(log_path, "rb") as log:
        start = 0
        if since > 0:
            idx.seek((since - 1) * RECORD.size)
            head = idx.read(RECORD.size)
            if len(head) < RECORD.size:
                return
            start = RECORD.unpack(head)[0] & OFFSET_MASK
        else:
            idx.seek(0)
        log.seek(start)
        seq = since
        while True:
            chunk = idx.read(RECORD.size * 1024)
            whole = len(chunk) - len(chunk) % RECORD.size
            if whole < len(chunk):  # a record being written: leave it for the next read
                idx.seek(whole - len(chunk), os.SEEK_CUR)
            if whole == 0:
                return
            for i in range(0, whole, RECORD.size):
                packed, ts = RECORD.unpack_from(chunk, i)
                end = packed & OFFSET_MASK
                data = log.read(end - start)
                if len(data) < end - start:
                    return  # the .log is behind its index: stop at what is really there
                seq += 1
                yield Line(seq, ts, data, bool(packed >> 56 & PARTIAL))
                start = end
