"""The adaptive policy on a fake clock and a fake pool of workers: never above the maximum,
counting workers still starting; no flapping on an oscillating load; the minimum kept; no
scale-down while a step has just started; each change said, with why."""

from __future__ import annotations

import pytest

from daskstep.adaptive import Autoscaler
from daskstep.scaling import Adapt


class Pool:
    """Workers by name: asked for (pending until they arrive), registered, retired; and a
    scheduler that wants what `wants` says, look after look."""

    def __init__(self, running: int = 0, wants: list[int] | None = None) -> None:
        self.wants = iter(wants or [])
        self.last = 0
        self.pending: set[str] = set()
        self.running = {f"worker-{i}" for i in range(running)}
        self.made = running
        self.idle: dict[str, float] = {}
        self.retired: list[str] = []
        self.most = running  # the most workers ever requested at once

    def requested(self) -> set[str]:
        return self.pending | self.running

    def observed(self) -> set[str]:
        return set(self.running)

    def scale_up(self, total: int) -> None:
        while len(self.requested()) < total:
            self.pending.add(f"worker-{self.made}")
            self.made += 1
        self.most = max(self.most, len(self.requested()))

    def arrive(self) -> None:
        self.running |= self.pending
        self.pending = set()

    def retire(self, names: list[str]) -> list[str]:
        gone = [n for n in names if n in self.requested()]
        self.pending -= set(gone)
        self.running -= set(gone)
        self.retired += gone
        return gone

    def wanted(self) -> int:
        self.last = next(self.wants)
        return self.last

    def waiting(self) -> str:
        return f"{self.last * 10} tasks waiting"

    def unneeded(self, n: int) -> list[str]:
        """The idlest first, as the scheduler's workers_to_close would pick."""
        return sorted(self.running, key=lambda w: -self.idle.get(w, 0.0))[:n]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def scaler(pool: Pool, wanted: list[int], events: list, minimum=0, maximum=4, **kw):
    pool.wants = iter(wanted)

    def report(component: str, what: str, why: str) -> None:
        events.append((component, what, why))

    return Autoscaler(pool, Adapt(minimum, maximum), report, clock=kw.pop("clock", Clock()), **kw)


def test_never_above_the_maximum_counting_workers_still_starting() -> None:
    pool, events = Pool(), []
    autoscaler = scaler(pool, [50] * 20, events, maximum=4, wait_count=3)
    for _ in range(20):  # the queue never starts them: no second request, no loop
        autoscaler.look()
    assert pool.most == 4 and len(pool.pending) == 4
    assert events == [("cluster", "scaled up to 4 workers", "from 0; 500 tasks waiting")]


def test_an_oscillating_load_retires_nobody() -> None:
    pool, events = Pool(running=4), []
    autoscaler = scaler(pool, [4, 1] * 20, events, wait_count=3)
    for _ in range(40):
        autoscaler.look()
    assert pool.retired == [] and events == []


def test_a_lasting_low_load_retires_down_to_the_minimum_after_wait_count_looks() -> None:
    pool, events = Pool(running=4), []
    pool.idle = {"worker-0": 3.0, "worker-1": 30.0, "worker-2": 20.0, "worker-3": 10.0}
    clock = Clock()
    autoscaler = scaler(pool, [0] * 10, events, minimum=1, wait_count=3, clock=clock)
    autoscaler.look()
    clock.now = 1.0
    autoscaler.look()
    assert pool.retired == []  # two looks: not yet
    clock.now = 2.0
    autoscaler.look()
    assert sorted(pool.retired) == ["worker-1", "worker-2", "worker-3"]  # the idlest three
    assert pool.observed() == {"worker-0"}  # the minimum stays
    assert ("worker worker-1", "retired", "not needed for 2 s; its data moved first") in events
    for _ in range(5):
        autoscaler.look()
    assert pool.observed() == {"worker-0"}


def test_no_scale_down_while_a_step_has_just_started() -> None:
    pool, events, clock = Pool(running=2), [], Clock()
    autoscaler = scaler(pool, [0] * 20, events, wait_count=2, hold=5.0, clock=clock)
    autoscaler.step_started()
    for second in range(5):
        clock.now = second
        autoscaler.look()
    assert pool.retired == []
    clock.now = 5.0
    autoscaler.look()
    assert pool.retired == []  # the first look past the hold counts once
    autoscaler.look()
    assert sorted(pool.retired) == ["worker-0", "worker-1"]


def test_workers_that_never_arrived_go_first() -> None:
    pool, events = Pool(running=1), []
    autoscaler = scaler(pool, [3, 1, 1], events, wait_count=2)
    autoscaler.look()  # up to 3: two pending
    autoscaler.look()
    autoscaler.look()
    assert sorted(pool.retired) == ["worker-1", "worker-2"] and pool.running == {"worker-0"}
    why = "asked for, and no longer needed before it came"
    assert ("worker worker-1", "retired", why) in events


def test_limits_that_cannot_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="minimum <= maximum"):
        scaler(Pool(), [], [], minimum=3, maximum=2)
