"""The scheduler watch's judgement, on identities as the scheduler gives them and a fake clock."""

from __future__ import annotations

from typing import Any

from daskstep.watch import SchedulerWatch


def identity(*workers: tuple[str, str]) -> dict[str, Any]:
    return {
        "workers": {
            f"tcp://127.0.0.1:{i}": {
                "name": name, "status": status, "memory_limit": 512 * 2**20,
                "metrics": {"memory": 450 * 2**20},
            }
            for i, (name, status) in enumerate(workers)
        }
    }  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def watch(wanted: int = 2, grace: float = 30.0) -> tuple[SchedulerWatch, list, Clock]:
    events: list[tuple[str, str, str]] = []
    clock = Clock()
    return SchedulerWatch(dict, wanted, lambda *e: events.append(e), grace, clock), events, clock


def test_a_paused_worker_is_said_once_when_it_pauses_and_once_when_it_runs_again() -> None:
    w, events, _ = watch()
    w.look(identity(("worker-0", "running"), ("worker-1", "paused")))
    w.look(identity(("worker-0", "running"), ("worker-1", "paused")))
    w.look(identity(("worker-0", "running"), ("worker-1", "running")))
    assert events == [
        ("worker worker-1", "paused for memory",
         "it holds 450.00 MiB of its 512.00 MiB limit; it stopped taking tasks until memory is "
         "spilled or freed"),
        ("worker worker-1", "running again", "its memory went back under the limit"),
    ]  # fmt: skip


def test_too_few_workers_is_news_only_after_the_grace_period() -> None:
    w, events, clock = watch(wanted=2, grace=30)
    w.look(identity(("worker-0", "running")))  # one lost: a restart takes a second
    clock.now += 29
    w.look(identity(("worker-0", "running")))
    assert events == []
    clock.now += 2
    w.look(identity(("worker-0", "running")))
    w.look(identity(("worker-0", "running")))
    assert events == [("cluster", "too few workers", "1 of 2 workers for 30 s; tasks run slower")]
    w.look(identity(("worker-0", "running"), ("worker-1", "running")))
    assert events[-1] == ("cluster", "workers back", "2 of 2 workers")


def test_a_short_gap_is_not_news() -> None:
    w, events, clock = watch(wanted=2, grace=30)
    w.look(identity(("worker-0", "running")))
    clock.now += 5
    w.look(identity(("worker-0", "running"), ("worker-1", "running")))
    clock.now += 60
    w.look(identity(("worker-0", "running"), ("worker-1", "running")))
    assert events == []


def test_poll_asks_at_most_once_a_second_and_survives_a_silent_scheduler() -> None:
    asked = []

    def ask() -> dict:
        asked.append(1)
        raise OSError("connection refused")

    clock = Clock()
    w = SchedulerWatch(ask, 2, lambda *e: None, 30, clock)
    for _ in range(10):
        w.poll()
    clock.now += 1.0
    w.poll()
    assert len(asked) == 2


def test_no_answer_is_not_zero_workers() -> None:
    w, events, clock = watch(wanted=2, grace=1)
    w.look({})
    clock.now += 5
    w.look({})
    assert events == [] and w.short_since is None
