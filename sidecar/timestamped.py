"""Logs that the engine prefixes with a timestamp (Kubernetes, Docker): parse, split, resume.

Both APIs, asked with `timestamps=True`, put an RFC3339(Nano) time and one space before each
log message: `2026-11-27T11:48:01.123456789Z hello\\n`. The store keeps the line without the
prefix and indexes it under the parsed time. That time is also the only position these APIs
know, so resuming works from the store: ask for lines since the last stored timestamp, drop
what is older, and skip as many bytes from that timestamp on as the store holds from there
(`ResumeFilter`). Bytes rather than lines, because a line the store holds in pieces (cut at
`max_line`, or flushed without its newline at shutdown) may come back whole.

Runtimes split a line longer than 16 KiB into several messages, and each gets its own prefix,
so a long line arrives as `ts1 <16 KiB>ts2 <16 KiB>ts3 <rest>\\n`. The assembler strips a
prefix found exactly at such a fragment boundary and nowhere else, so user text that merely
contains a timestamp is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import NamedTuple

from sidecar.store import Stream, read_lines

MAX_LINE = 1 << 20  # longer lines are stored as several partial records
FRAGMENT = 16 * 1024  # Docker's and containerd's split size for long lines
PREFIX_MAX = 40  # "2026-11-27T11:48:01.123456789+00:00 " is 36 bytes
HEAD = 64 << 10  # bytes of the store's tail compared with a response read again
_EPOCH_DAYS = date(1970, 1, 1).toordinal()


def parse_timestamp(text: bytes | str) -> int:
    """RFC3339 with any number of fractional digits, to nanoseconds since the epoch (UTC).

    Written by hand: `datetime` keeps only microseconds, and Go's RFC3339Nano (Kubernetes)
    trims trailing zeros while Docker always writes nine digits.
    """
    s = text.decode("ascii") if isinstance(text, bytes) else text
    if not s.isascii() or len(s) < 20:
        raise ValueError(f"not an RFC3339 timestamp: {s!r}")
    if (s[4], s[7], s[13], s[16]) != ("-", "-", ":", ":") or s[10] not in "Tt":
        raise ValueError(f"not an RFC3339 timestamp: {s!r}")
    fields = (s[0:4], s[5:7], s[8:10], s[11:13], s[14:16], s[17:19])
    if not all(f.isdigit() for f in fields):
        raise ValueError(f"not an RFC3339 timestamp: {s!r}")
    year, month, day, hour, minute, second = (int(f) for f in fields)
    i, frac = 19, 0
    if s[i] == ".":
        j = i + 1
        while j < len(s) and s[j].isdigit():
            j += 1
        if j == i + 1:
            raise ValueError(f"empty fraction in timestamp: {s!r}")
        frac = int(s[i + 1 : j][:9].ljust(9, "0"))  # digits past nanoseconds are cut, not rounded
        i = j
    zone = s[i:]
    if zone in ("Z", "z"):
        offset = 0
    elif len(zone) == 6 and zone[0] in "+-" and zone[3] == ":" and (zone[1:3] + zone[4:]).isdigit():
        offset = (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * (1 if zone[0] == "+" else -1)
    else:
        raise ValueError(f"bad time zone in timestamp: {s!r}")
    if hour > 23 or minute > 59 or second > 60:
        raise ValueError(f"time out of range: {s!r}")
    days = date(year, month, day).toordinal() - _EPOCH_DAYS  # ValueError for 2026-02-30
    seconds = days * 86400 + hour * 3600 + minute * 60 + second - offset
    return seconds * 1_000_000_000 + frac


class Record(NamedTuple):
    timestamp_ns: int
    data: bytes  # without the prefix; ends with a newline unless it is a partial record


_WAIT = -1  # not enough bytes yet to tell whether a prefix follows


def _match_prefix(buf: bytes, pos: int, final: bool) -> tuple[int, int] | int | None:
    """(timestamp, prefix length) if `buf[pos:]` starts with one; None if not; _WAIT if unsure."""
    window = buf[pos : pos + PREFIX_MAX]
    space = window.find(b" ")
    newline = window.find(b"\n")
    if space < 0 or (0 <= newline < space):
        return None if (newline >= 0 or final or len(window) >= PREFIX_MAX) else _WAIT
    try:
        return parse_timestamp(window[:space]), space + 1
    except ValueError:
        return None


class LineAssembler:
    """Turns one log response, in chunks of any size, into records.

    A line without its newline is held back until the newline comes or `finish()` is called
    (the response ended, or the sidecar shuts down). At most `max_line` bytes of one line are
    held: beyond that the line goes out as partial records, all with the line's timestamp.
    """

    def __init__(
        self, max_line: int = MAX_LINE, fragment: int | None = FRAGMENT, last_ts: int = 0
    ) -> None:
        self.max_line = max_line
        self.fragment = fragment
        self.last_ts = last_ts  # for a line that has no prefix (should not happen)
        self._buf = b""
        self._pos = 0
        self._line = bytearray()
        self._ts: int | None = None  # None: at the start of a line, before its prefix
        self._frag = 0  # content bytes since the last prefix

    def feed(self, data: bytes, message: bool = False) -> list[Record]:
        """`message`: `data` starts a new log message, so it starts with a prefix (Docker's
        frames tell). Unless the held line stops at a fragment boundary, the message starts a
        new line and the held one goes out as a partial record: the end of a container's run
        without a newline, or a partial stdout line before a stderr message."""
        out = []
        at_boundary = self.fragment is not None and self._frag == self.fragment
        if message and self._ts is not None and self._pos >= len(self._buf) and not at_boundary:
            if self._line:
                out.append(Record(self._ts, bytes(self._line)))
                self._line.clear()
            self._ts = None
        self._buf = self._buf[self._pos :] + data
        self._pos = 0
        return out + self._run(final=False)

    def finish(self) -> list[Record]:
        """Everything held, the last line as a partial record; then ready for a new response."""
        out = self._run(final=True)
        if self._line:
            ts = self._ts if self._ts is not None else self.last_ts
            out.append(Record(ts, bytes(self._line)))
        self._buf, self._pos, self._ts, self._frag = b"", 0, None, 0
        self._line.clear()
        return out

    def _run(self, final: bool) -> list[Record]:
        out: list[Record] = []
        buf = self._buf
        while True:
            if self._ts is None:
                if self._pos >= len(buf):
                    break
                found = _match_prefix(buf, self._pos, final)
                if found == _WAIT:
                    break
                if isinstance(found, tuple):
                    self._ts = self.last_ts = found[0]
                    self._pos += found[1]
                else:
                    self._ts = self.last_ts
                self._frag = 0
            room = self.max_line - len(self._line)
            if room == 0:
                out.append(Record(self._ts, bytes(self._line)))
                self._line.clear()
                continue
            limit = room if self.fragment is None else min(room, self.fragment - self._frag)
            if limit == 0:  # a runtime's fragment boundary: the next message's prefix may follow
                found = _match_prefix(buf, self._pos, final)
                if found == _WAIT:
                    break
                if isinstance(found, tuple):
                    self._pos += found[1]
                self._frag = 0
                continue
            if self._pos >= len(buf):
                break
            end = min(len(buf), self._pos + limit)
            newline = buf.find(b"\n", self._pos, end)
            if newline >= 0:
                self._line += buf[self._pos : newline + 1]
                self._pos = newline + 1
                out.append(Record(self._ts, bytes(self._line)))
                self._line.clear()
                self._ts = None
            else:
                self._line += buf[self._pos : end]
                self._frag += end - self._pos
                self._pos = end
        return out

    @property
    def held_bytes(self) -> int:
        return len(self._line) + len(self._buf) - self._pos


@dataclass
class Cursor:
    """Where a store stream ends: its last timestamp, the bytes of the trailing records that
    carry it, and the first of those bytes (up to `HEAD`) to recognise them when read again."""

    timestamp_ns: int = 0
    bytes_at_ts: int = 0
    head: bytes = b""

    @classmethod
    def of(cls, stream: Stream) -> Cursor:
        ts, count = stream.trailing_timestamp()
        cursor = cls(ts)
        if count:
            for line in read_lines(stream.log_path, since=stream.lines - count):
                cursor.advance(Record(ts, line.data))
        return cursor

    def advance(self, record: Record) -> None:
        if record.timestamp_ns != self.timestamp_ns or not self.bytes_at_ts:
            self.timestamp_ns, self.bytes_at_ts, self.head = record.timestamp_ns, 0, b""
        self.bytes_at_ts += len(record.data)
        if len(self.head) < HEAD:
            self.head += record.data[: HEAD - len(self.head)]


class ResumeFilter:
    """Drops, from a response asked from `cursor.timestamp_ns` on, what the store already has:
    the records older than that, then as many bytes as the store holds from that time on.

    The bytes are counted from the first record at `since`, whatever the later ones' times
    (lines that the store indexed again after a crash carry its last timestamp, not their own),
    but only while they are the same bytes: a response from another container or another
    instance (a job's next pod, a restarted container) holds new lines from `since` on.
    APIs give lines in log order, so once one new record has passed, all later ones are new
    (even if a clock step makes their timestamps go back).
    """

    def __init__(self, cursor: Cursor) -> None:
        self.since = cursor.timestamp_ns
        self.total = self.skip = cursor.bytes_at_ts
        self.head = cursor.head
        self.passed = False

    def apply(self, record: Record) -> Record | None:
        if self.passed:
            return record
        ts, data = record
        if ts < self.since:
            return None
        if self.skip:
            at = self.total - self.skip
            n = min(len(data), len(self.head) - at)
            if n > 0 and data[:n] != self.head[at : at + n]:
                self.passed = True  # not what the store has: another log
                return record
            if len(data) <= self.skip:
                self.skip -= len(data)
                return None
            record = Record(ts, data[self.skip :])  # the rest of a line stored in part
        self.passed = True
        return record
