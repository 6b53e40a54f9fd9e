"""The file source and the shipping loop, on real files and the real store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sidecar import files
from sidecar.checkpoint import Checkpoints
from sidecar.files import FileSource, stream_name
from sidecar.logs import Shipper
from sidecar.store import LogStore, read_lines


class Rig:
    """A shipper over one folder of log files; `restart()` is a crash and a fresh start."""

    def __init__(self, tmp: Path, component: str = "job", pattern: str = "app.log*") -> None:
        self.tmp = tmp
        self.logs = tmp / "raw"
        self.logs.mkdir(exist_ok=True)
        self.component, self.pattern = component, str(self.logs / pattern)
        self.restart()

    def restart(self) -> None:
        self.store = LogStore(self.tmp / "store")
        source = FileSource(self.component, self.pattern, rotate_wait=0)
        self.shipper = Shipper(self.store, [source], Checkpoints(self.tmp / "ckpt.json"))
        self.shipper.start()

    def ship(self, final: bool = False) -> None:
        for _ in range(100):
            if self.shipper.step() == 0:
                break
        if final:
            self.shipper.step(final=True)

    def write(self, name: str, data: bytes) -> None:
        with open(self.logs / name, "ab") as f:
            f.write(data)

    def lines(self, name: str | None = None) -> list[bytes]:
        path = self.store.path(self.component, name)
        return [line.data for line in read_lines(path)]


@pytest.fixture
def rig(tmp_path: Path) -> Rig:
    return Rig(tmp_path)


def test_a_partial_line_waits_for_its_newline(rig: Rig) -> None:
    rig.write("app.log", b"one\ntw")
    rig.ship()
    assert rig.lines() == [b"one\n"]
    rig.write("app.log", b"o\nthree")
    rig.ship()
    assert rig.lines() == [b"one\n", b"two\n"]
    rig.ship(final=True)  # shutdown: the last line goes in without its newline
    assert rig.lines() == [b"one\n", b"two\n", b"three"]
    assert [line.partial for line in read_lines(rig.store.path("job"))] == [False, False, True]


def test_carriage_returns_stay_inside_the_line(rig: Rig) -> None:
    rig.write("app.log", b"10%\r50%\r100%\ndone\n")
    rig.ship()
    assert rig.lines() == [b"10%\r50%\r100%\n", b"done\n"]


def test_bytes_that_are_not_utf8_are_kept_and_shown_replaced(rig: Rig) -> None:
    rig.write("app.log", b"caf\xe9 \xff\xfe\n")
    rig.ship()
    [line] = read_lines(rig.store.path("job"))
    assert line.data == b"caf\xe9 \xff\xfe\n"
    assert line.text() == "caf\ufffd \ufffd\ufffd\n"
    assert (rig.tmp / "store" / "job.log").read_bytes() == b"caf\xe9 \xff\xfe\n"


def test_a_very_long_line_is_stored_in_bounded_pieces(rig: Rig, monkeypatch) -> None:
    monkeypatch.setattr(files, "MAX_LINE", 1000)
    monkeypatch.setattr(files, "READ_CHUNK", 700)
    line = bytes(range(97, 123)) * 200 + b"\n"  # 5201 bytes
    rig.write("app.log", line + b"short\n")
    rig.ship()
    stored = list(read_lines(rig.store.path("job")))
    assert b"".join(s.data for s in stored) == line + b"short\n"
    assert max(len(s.data) for s in stored) <= 1000 + 1
    assert [s.partial for s in stored][-2:] == [False, False]
    assert any(s.partial for s in stored)


def test_a_file_that_appears_late_is_picked_up(rig: Rig) -> None:
    rig.ship()
    assert rig.lines() == []
    rig.write("app.log", b"late\n")
    rig.ship()
    assert rig.lines() == [b"late\n"]


def test_rename_rotation_reads_the_old_file_to_its_end_first(rig: Rig) -> None:
    rig.write("app.log", b"a\n")
    rig.ship()
    rig.write("app.log", b"b\n")  # written, not yet shipped, then rotated away
    os.rename(rig.logs / "app.log", rig.logs / "app.log.1")
    rig.write("app.log", b"c\n")
    rig.ship()
    assert rig.lines() == [b"a\n", b"b\n", b"c\n"]


def test_rotations_while_the_sidecar_was_down(rig: Rig) -> None:
    rig.write("app.log", b"1\n")
    rig.ship()
    rig.write("app.log", b"2\n")
    os.rename(rig.logs / "app.log", rig.logs / "app.log.1")
    rig.write("app.log", b"3\n")
    os.rename(rig.logs / "app.log.1", rig.logs / "app.log.2")
    os.rename(rig.logs / "app.log", rig.logs / "app.log.1")
    rig.write("app.log", b"4\n")
    rig.restart()
    rig.ship()
    assert rig.lines() == [b"1\n", b"2\n", b"3\n", b"4\n"]


def test_copytruncate_reads_the_tail_from_the_copy_once(rig: Rig) -> None:
    rig.write("app.log", b"a\nb\n")
    rig.ship()
    rig.write("app.log", b"c\n")  # not shipped before the copy and the truncation
    (rig.logs / "app.log.1").write_bytes((rig.logs / "app.log").read_bytes())
    rig.ship()  # the copy is seen while the original is still whole: it must wait
    os.truncate(rig.logs / "app.log", 0)
    rig.write("app.log", b"d\n")
    rig.ship()
    assert rig.lines() == [b"a\n", b"b\n", b"c\n", b"d\n"]


def test_copytruncate_when_the_copy_is_seen_only_after_the_truncation(rig: Rig) -> None:
    rig.write("app.log", b"a\n")
    rig.ship()
    rig.write("app.log", b"b\n")
    content = (rig.logs / "app.log").read_bytes()
    os.truncate(rig.logs / "app.log", 0)
    rig.ship()
    (rig.logs / "app.log.1").write_bytes(content)
    rig.write("app.log", b"c\n")
    rig.ship()
    assert rig.lines() == [b"a\n", b"b\n", b"c\n"]  # the copy before the new content


def test_a_plain_truncation_starts_the_file_over(rig: Rig) -> None:
    rig.write("app.log", b"first life\n")
    rig.ship()
    os.truncate(rig.logs / "app.log", 0)
    rig.write("app.log", b"second\n")
    rig.ship()
    assert rig.lines() == [b"first life\n", b"second\n"]


def test_a_crash_after_the_store_write_and_before_the_checkpoint(rig: Rig) -> None:
    rig.write("app.log", b"one\n")
    rig.ship()
    rig.write("app.log", b"two\nthree\n")
    source = rig.shipper.sources[0]
    source.poll(rig.store)  # into the store ...
    rig.store.sync()  # ... durably, but the checkpoint is not saved: then SIGKILL
    rig.restart()
    rig.ship()
    rig.write("app.log", b"four\n")
    rig.ship()
    assert rig.lines() == [b"one\n", b"two\n", b"three\n", b"four\n"]


def test_a_crash_with_the_index_behind_the_log(rig: Rig) -> None:
    rig.write("app.log", b"one\n")
    rig.ship()
    with open(rig.tmp / "store" / "job.log", "ab") as f:
        f.write(b"two\n")  # what the sidecar wrote to the .log just before it died
    rig.write("app.log", b"two\nthree\n")
    rig.restart()
    rig.ship()
    assert rig.lines() == [b"one\n", b"two\n", b"three\n"]


def test_a_kill_in_the_middle_of_a_store_write(rig: Rig) -> None:
    rig.write("app.log", b"one\n")
    rig.ship()
    with open(rig.tmp / "store" / "job.log", "ab") as f:
        f.write(b"two\nthr")  # a write torn by SIGKILL: one whole line, and part of the next
    rig.write("app.log", b"two\nthree\n")
    rig.restart()
    rig.ship()
    assert rig.lines() == [b"one\n", b"two\n", b"three\n"]  # three is one line, not two


def test_each_worker_file_is_its_own_stream(tmp_path: Path) -> None:
    rig = Rig(tmp_path, "worker", "*.log*")
    rig.write("worker-0.log", b"zero\n")
    rig.write("worker-1.log", b"one\n")
    rig.ship()
    os.rename(rig.logs / "worker-0.log", rig.logs / "worker-0.log.1")
    rig.write("worker-0.log", b"zero again\n")
    rig.ship()
    assert rig.lines("worker-0") == [b"zero\n", b"zero again\n"]
    assert rig.lines("worker-1") == [b"one\n"]


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/x/worker-0.log", "worker-0"),
        ("/x/worker-0.log.1", "worker-0"),
        ("/x/worker-0.log.12", "worker-0"),
        ("/x/worker-0.log-20261127", "worker-0"),
        ("/x/worker-0.log.2026-11-27", "worker-0"),
        ("/x/worker-0.log.1.gz", "worker-0"),
        ("/x/tcp-127.0.0.1-8786.log", "tcp-127.0.0.1-8786"),
    ],
)
def test_rotated_siblings_keep_the_stream_name(path: str, name: str) -> None:
    assert stream_name(path) == name
