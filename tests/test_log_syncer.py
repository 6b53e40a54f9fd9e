"""The log sidecar's syncer: the store's fsyncs and the checkpoint after them, off the shipping
loop. A checkpoint may only land after the fsyncs of what it counts, only the newest one
matters, and a disk error reaches the loop."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from sidecar import checkpoint
from sidecar.checkpoint import Checkpoints, Syncer
from sidecar.files import FileSource
from sidecar.logs import Shipper
from sidecar.store import LogStore, read_lines


class Disk:
    """os.fsync as the syncer sees it: recorded, optionally held, optionally failing."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.hold = threading.Event()
        self.hold.set()
        self.entered = threading.Event()
        self.error: OSError | None = None

    def fsync(self, fd: int) -> None:
        self.entered.set()
        self.hold.wait(10)
        if self.error is not None:
            raise self.error
        self.events.append(f"fsync {fd}")


@pytest.fixture
def disk(monkeypatch: pytest.MonkeyPatch) -> Disk:
    events: list[str] = []
    fake = Disk(events)
    monkeypatch.setattr(checkpoint.os, "fsync", fake.fsync)
    real_save = Checkpoints.save

    def save(self: Checkpoints, states: dict) -> bool:
        events.append(f"save {json.dumps(states, sort_keys=True)}")
        return real_save(self, states)

    monkeypatch.setattr(Checkpoints, "save", save)
    return fake


def saved(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_checkpoint_lands_after_the_fsyncs_of_what_it_counts(tmp_path: Path, disk: Disk):
    syncer = Syncer(Checkpoints(tmp_path / "ckpt.json"))
    syncer.hand([1011, 1012], {"files": 1})
    syncer.flush()
    syncer.close()
    ours = [e for e in disk.events if e in ("fsync 1011", "fsync 1012") or e.startswith("save")]
    assert sorted(ours[:2]) == ["fsync 1011", "fsync 1012"]
    assert ours[2:] == ['save {"files": 1}']
    assert saved(tmp_path / "ckpt.json") == {"files": 1}


def test_a_newer_checkpoint_replaces_one_still_waiting(tmp_path: Path, disk: Disk) -> None:
    syncer = Syncer(Checkpoints(tmp_path / "ckpt.json"))
    disk.hold.clear()
    syncer.hand([1003], {"n": 1})
    assert disk.entered.wait(10)  # the first is being synced, and held there
    syncer.hand([1004], {"n": 2})
    syncer.hand([1005], {"n": 3})
    disk.hold.set()
    syncer.flush()
    syncer.close()
    saves = [e for e in disk.events if e.startswith("save")]
    assert saves == ['save {"n": 1}', 'save {"n": 3}']  # n=2 never mattered
    last = disk.events.index('save {"n": 3}')
    assert {"fsync 1004", "fsync 1005"} <= set(disk.events[:last])  # its fsyncs cover both
    assert saved(tmp_path / "ckpt.json") == {"n": 3}


def test_a_disk_error_reaches_the_shipping_loop(tmp_path: Path, disk: Disk) -> None:
    syncer = Syncer(Checkpoints(tmp_path / "ckpt.json"))
    disk.error = OSError(5, os.strerror(5))
    syncer.hand([1007], {"n": 1})
    with pytest.raises(OSError, match="Input/output error"):
        syncer.flush()
    syncer.close()
    assert not (tmp_path / "ckpt.json").exists()  # nothing counted that is not durable


class LazySyncer(Syncer):
    """The slowest disk allowed: a handed-over checkpoint lands only when the loop waits for
    it (a kill at any moment finds the checkpoint of the last wait)."""

    def __init__(self, checkpoints: Checkpoints) -> None:
        self.checkpoints = checkpoints
        self.states: dict | None = None

    def hand(self, fds: list[int], states: dict) -> None:
        self.states = states

    def flush(self) -> None:
        if self.states is not None:
            self.checkpoints.save(self.states)
            self.states = None

    def close(self) -> None:
        pass


def test_a_kill_after_a_rotation_stores_no_line_twice_however_slow_the_checkpoints(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    live = raw / "w.log"
    live.write_bytes(b"".join(b"%d\n" % i for i in range(100)))
    folder, ckpt = tmp_path / "store", tmp_path / "ckpt.json"

    def shipper() -> Shipper:
        ship = Shipper(
            LogStore(folder), [FileSource("worker", f"{raw}/*.log*", 0)], Checkpoints(ckpt)
        )
        ship.start()
        ship.syncer = LazySyncer(ship.checkpoints)
        return ship

    first = shipper()
    while first.step():
        pass
    os.rename(live, raw / "w.log.1")
    live.write_bytes(b"".join(b"%d\n" % i for i in range(100, 200)))
    os.utime(raw / "w.log.1", (0, 0))  # left alone long enough: its successor may take over
    while first.step():
        pass  # then killed: no drain, no last checkpoint
    second = shipper()
    second.drain()
    second.store.close()
    numbers = [int(line.data) for line in read_lines(folder / "workers" / "w.log")]
    assert numbers == list(range(200))
