"""The log store's index: blocks of lines from files, a record per line from timestamped
sources, and readers that find any line by its number, also after a crash."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from daskstep.ui.data import log_page
from sidecar.store import RECORD, Stream, index_path, read_lines, total_lines, whole_lines

line_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"") + b"\n")
block = st.lists(line_bytes, min_size=1, max_size=8).map(lambda lines: ("block", lines, None))
stamped = st.lists(st.tuples(line_bytes, st.integers(1, 5)), min_size=1, max_size=5).map(
    lambda pairs: ("lines", [p[0] for p in pairs], [p[1] for p in pairs])
)
piece = st.binary(min_size=1, max_size=20).map(lambda b: ("lines", [b.replace(b"\n", b"")], [9]))


def write(stream: Stream, op: tuple) -> None:
    kind, lines, stamps = op
    if kind == "block":
        data = b"".join(lines)
        assert whole_lines(data) == (len(data), len(lines))
        stream.append_block(data, len(lines))
    else:
        stream.append([x for x in lines if x], stamps and stamps[: len([x for x in lines if x])])


def expected(ops: list[tuple]) -> list[bytes]:
    return [x for _, lines, _ in ops for x in lines if x]


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.one_of(block, stamped, piece), max_size=12), data=st.data())
def test_every_line_is_found_by_its_number(tmp_path_factory, ops, data) -> None:
    path = tmp_path_factory.mktemp("store") / "job.log"
    stream = Stream(path)
    for op in ops:
        write(stream, op)
    stream.close()
    want = expected(ops)
    assert total_lines(path) == len(want) == Stream(path).lines
    since = data.draw(st.integers(0, len(want)))
    got = list(read_lines(path, since=since))
    assert [x.data for x in got] == want[since:]
    assert [x.seq for x in got] == list(range(since + 1, len(want) + 1))
    assert [x.partial for x in got] == [not x.endswith(b"\n") for x in want[since:]]
    if want:
        before = data.draw(st.integers(1, len(want) + 1))
        page = log_page(path, before=before, limit=3)
        assert [x["seq"] for x in page["lines"]] == list(range(before - 1, max(0, before - 4), -1))
        assert [x["text"].encode("utf-8", "replace") for x in page["lines"]] == [
            want[i - 1].decode("utf-8", "replace").encode()
            for i in range(before - 1, max(0, before - 4), -1)
        ]


def test_block_lines_share_their_block_time_and_stamped_lines_keep_their_own(tmp_path) -> None:
    path = tmp_path / "w.log"
    stream = Stream(path)
    stream.append_block(b"a\nb\n", 2)
    stream.append([b"c\n", b"d\n", b"e\n"], [7, 8, 8])
    stamps = [x.timestamp_ns for x in read_lines(path)]
    assert stamps[0] == stamps[1] > 8 and stamps[2:] == [7, 8, 8]
    assert stream.trailing_timestamp() == (8, 2)  # d and e: where a Docker source resumes


def test_a_torn_index_record_is_cut_and_its_lines_indexed_again(tmp_path) -> None:
    path = tmp_path / "job.log"
    stream = Stream(path)
    stream.append_block(b"one\ntwo\n", 2)
    stream.close()
    with open(path, "ab") as log, open(index_path(path), "ab") as idx:
        log.write(b"three\n")
        idx.write(RECORD.pack(14, 0, 3)[:10])  # the kill came in the middle of the record
    assert Stream(path).lines == 3
    assert os.path.getsize(index_path(path)) % RECORD.size == 0
    assert [x.data for x in read_lines(path, since=1)] == [b"two\n", b"three\n"]


def test_a_lost_write_of_the_log_drops_the_records_beyond_it(tmp_path) -> None:
    path = tmp_path / "job.log"
    stream = Stream(path)
    stream.append_block(b"one\n", 1)
    stream.append_block(b"two\nthree\n", 2)
    stream.close()
    os.truncate(path, len(b"one\ntwo\n"))  # the .log lost its last write, the index did not
    stream = Stream(path)
    assert stream.lines == 2  # one, and two indexed again from the .log
    assert [x.data for x in read_lines(path)] == [b"one\n", b"two\n"]


def test_a_reader_stops_where_the_log_is_behind_its_index(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    Stream(path).append_block(b"one\ntwo\n", 2)
    with open(index_path(path), "ab") as idx:  # a record whose bytes are not in the .log (yet)
        idx.write(RECORD.pack(100, 0, 5))
    assert [x.data for x in read_lines(path)] == [b"one\n", b"two\n"]


def test_no_index_no_lines(tmp_path: Path) -> None:
    (tmp_path / "job.log").write_bytes(b"one\n")
    assert list(read_lines(tmp_path / "job.log")) == []
    assert total_lines(tmp_path / "job.log") == 0
    assert log_page(tmp_path / "job.log") == {"lines": [], "total": 0, "before": None}
