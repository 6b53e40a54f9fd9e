"""Timestamp parsing and line assembly shared by the container log sources."""

from __future__ import annotations

import pytest
from log_fakes import (
    T0,
    fmt_ts,
)

from sidecar.timestamped import LineAssembler, Record, parse_timestamp


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
