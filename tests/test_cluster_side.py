"""The op our own schedulers answer while a cluster starts: the worker count, given as soon as
it is reached or changes, so that "ready" is the moment the last worker registers."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from daskstep.backends.cluster_side import workers_when


def test_the_count_comes_when_it_is_reached_or_changes_or_the_wait_is_over() -> None:
    async def main() -> None:
        scheduler = SimpleNamespace(workers={"a": 1})
        t = time.monotonic()
        assert await workers_when(scheduler, at_least=1, seen=-1, wait=5) == 1  # already there
        assert await workers_when(scheduler, at_least=3, seen=-1, wait=5) == 1  # news to them
        assert time.monotonic() - t < 1

        async def register(name: str, after: float) -> None:
            await asyncio.sleep(after)
            scheduler.workers[name] = 1

        later = asyncio.ensure_future(register("b", 0.2))
        t = time.monotonic()
        assert await workers_when(scheduler, at_least=3, seen=1, wait=5) == 2
        await later
        assert 0.15 < time.monotonic() - t < 1, "not answered when the count changed"
        t = time.monotonic()
        assert await workers_when(scheduler, at_least=3, seen=2, wait=0.3) == 2
        assert time.monotonic() - t >= 0.3  # nothing changed: it waited out its time

    asyncio.run(main())
