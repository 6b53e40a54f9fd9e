"""The log sidecar wakes when a followed folder changes (inotify), not only at its poll: a new
worker's log is shipped at once. While lines keep coming, rounds keep the poll's pace."""

from __future__ import annotations

import select
import threading
import time
from pathlib import Path

from sidecar.checkpoint import Checkpoints
from sidecar.files import FileSource
from sidecar.logs import Shipper
from sidecar.store import LogStore, read_lines, total_lines
from sidecar.wake import FolderWatch, folder_of

POLL = 20.0  # a poll this slow would fail every assertion below on "at once"


def within(seconds: float, path: Path, lines: int) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if total_lines(path) >= lines:
            return True
        time.sleep(0.01)
    return False


def test_a_new_log_is_shipped_at_once_and_a_trickle_at_the_polls_pace(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    shipper = Shipper(
        LogStore(tmp_path / "store"),
        [FileSource("worker", f"{raw}/*.log")],
        Checkpoints(tmp_path / "c.json"),
    )
    runner = threading.Thread(target=shipper.run, kwargs={"poll_interval": POLL})
    runner.start()
    try:
        time.sleep(0.5)  # started, and asleep
        stored = tmp_path / "store" / "workers" / "w1.log"
        (raw / "w1.log").write_bytes(b"first\n")
        assert within(2.0, stored, 1), "a new log waited for the poll"
        with open(raw / "w1.log", "ab") as f:
            f.write(b"second\n")
        assert not within(1.0, stored, 2), "a line right after another did not wait for the poll"
    finally:
        shipper.stop.set()
        started = time.monotonic()
        runner.join(10)
    assert time.monotonic() - started < 5, "a stop did not wake the wait"
    assert [x.data for x in read_lines(stored)] == [b"first\n", b"second\n"]  # drained at stop


def test_the_watch_takes_a_folder_made_later_and_no_pattern_folder(tmp_path: Path) -> None:
    assert folder_of(f"{tmp_path}/*/w.log") is None
    assert folder_of(f"{tmp_path}/raw/*.log") == tmp_path / "raw"
    watch = FolderWatch([tmp_path / "raw"])
    try:
        [fd] = watch.descriptors()  # not there yet: nothing to watch, the poll goes on
        assert watch.pending == {tmp_path / "raw"}
        (tmp_path / "raw").mkdir()
        watch.descriptors()
        assert not watch.pending
        (tmp_path / "raw" / "w.log").write_bytes(b"x\n")
        assert select.select([fd], [], [], 2)[0] == [fd]
        watch.drain()
        assert select.select([fd], [], [], 0)[0] == []
    finally:
        watch.close()
