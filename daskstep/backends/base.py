"""The one interface every backend implements, and the lifecycle they share.

As dask-jobqueue's JobQueueCluster does, the base class owns what is common (waiting for workers
through the scheduler, stopping on every path); a backend only says how to start and how to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import dask.config

from daskstep.errors import Cancelled, ClusterError, TooFewWorkers
from daskstep.progress import say
from daskstep.record import RunFolder
from daskstep.secret_env import WORKERS_HASH_SEED
from daskstep.words import plural
from sidecar.lifecycle import StopSignal

WORKERS_WAIT = 0.25  # the longest our own scheduler holds a count back: cancels stay prompt


@dataclass(frozen=True)
class ClusterSpec:
    """What the workflow asked for, as the backends need it."""

    workers: int = 2
    threads: int = 4
    memory: str = "2Gi"
    image: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    read_only: tuple[Path, ...] = ()  # folders the workers see at the same path (credentials)
    adaptive: bool = False  # the workers follow the work (scaling.py)

    @property
    def memory_bytes(self) -> int:
        from daskstep.workflow.limits import parse_memory

        return parse_memory(self.memory)

    @classmethod
    def from_dask(
        cls,
        dask: Any,
        environment: Mapping[str, str] | None = None,
        read_only: tuple[Path, ...] = (),
    ) -> ClusterSpec:
        return cls(
            workers=dask.number_of_workers,
            threads=dask.single_worker_threads,
            memory=dask.single_worker_memory,
            image=dask.image,
            environment=dict(environment or {}),
            read_only=read_only,
        )


def nanny_environment(
    env: Mapping[str, str] | None = None, our_environ: Mapping[str, str] | None = None
) -> tuple[dict[str, str], dict[str, str]]:
    """What dask's Nanny gives a worker, as (before the process starts, once it runs).

    Before: `distributed.nanny.pre-spawn-environ` (BLAS threads = 1, MALLOC_TRIM_THRESHOLD_,
    which glibc and BLAS read only at start) and PYTHONHASHSEED, the same in every worker so
    that hashing agrees across them. After: `distributed.nanny.environ`, then `env`. A variable
    already set in our environment wins over the Dask config, and None in the config unsets
    it, as in Nanny. Without these, every worker's BLAS used every core: a matmul ran 1.45x
    slower than on a LocalCluster.
    """
    ours = os.environ if our_environ is None else our_environ
    config = _distributed_config()

    def from_config(key: str) -> dict[str, str]:
        values = dask.config.get(key, config=config) or {}
        return {k: ours.get(k, str(v)) for k, v in values.items() if v is not None}

    before = from_config("distributed.nanny.pre-spawn-environ")
    if before.get("PYTHONHASHSEED") in (None, "0"):
        before["PYTHONHASHSEED"] = WORKERS_HASH_SEED
    after = {
        **from_config("distributed.nanny.environ"),
        **{k: str(v) for k, v in (env or {}).items()},
    }
    return before, after


def _distributed_config() -> dict[str, Any]:
    """The user's Dask config over distributed's defaults, without importing distributed
    (0.3 s on the path to a ready cluster; its packaged defaults file is read instead)."""
    from importlib.util import find_spec

    import yaml

    spec = find_spec("distributed")
    assert spec is not None and spec.origin is not None
    text = (Path(spec.origin).parent / "distributed.yaml").read_text()
    defaults = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return dask.config.merge(defaults, dask.config.config)


@dataclass(frozen=True)
class ClusterHandle:
    scheduler_address: str
    dashboard_url: str | None = None


Progress = Callable[[int, int], None]  # (workers seen, workers wanted)
Report = Callable[[str, str, str], None]  # (component, what, why) of an event


class ClusterBackend(ABC):
    name: ClassVar[str]
    poll_interval = 0.05
    # True when steps run in the very Python environment of the workers, so that comparing
    # their versions (about 0.6 s a step) cannot find anything.
    shares_step_environment: ClassVar[bool] = False
    # False when daskstep run cannot reach the scheduler (a ClusterIP inside Kubernetes)
    scheduler_reachable: ClassVar[bool] = True
    scales_itself: ClassVar[bool] = False  # adaptive scaling is the platform's, not ours
    # True when the scheduler is daskstep's own (cluster_side.py): it answers our ops
    own_scheduler: ClassVar[bool] = False

    def __init__(self, tls: Any = None) -> None:
        self.handle: ClusterHandle | None = None
        self.cancel: StopSignal | None = None
        # who hears what happens to the cluster while it runs (an OOM kill): given to start()
        self.watcher: Report | None = None
        # the run's TLS files (daskstep.tls.RunTLS), or None for plain TCP
        self.tls: Any = tls
        self._own_counts: bool | None = None  # whether the scheduler has daskstep's counts op

    def connection_args(self) -> dict[str, Any]:
        """How daskstep itself talks to the scheduler: as a client of the run's CA, with TLS."""
        if self.tls is None:
            return {}
        return self.tls.security().get_connection_args("client")

    def _rpc(self, timeout: float) -> Any:
        """An rpc to the scheduler (`async with`), with the run's certificates when TLS is on."""
        from distributed.core import rpc

        return rpc(self._address(), timeout=timeout, connection_args=self.connection_args())

    def start(
        self,
        spec: ClusterSpec,
        run: RunFolder | Path,
        cancel: StopSignal | None = None,
        watcher: Report | None = None,
    ) -> ClusterHandle:
        """Start the cluster for `run` (its folder, or a bare workspace); whatever fails
        half-way is stopped, and the failure that stopped the start is the one raised, before
        any word of the stop: a stop that fails too is tried again, and said, by the run's
        teardown (stop is idempotent). Waits inside a backend's `_start` call
        `check_cancel()`. The `watcher` hears the cluster's events from then on (else they
        are warnings on stderr)."""
        self.cancel, self.watcher = cancel, watcher
        try:
            self.handle = self._start(spec, RunFolder.of(run))
        except BaseException:
            with contextlib.suppress(Exception):
                self.stop()
            raise
        return self.handle

    @abstractmethod
    def _start(self, spec: ClusterSpec, run: RunFolder) -> ClusterHandle: ...

    def report(self, component: str, what: str, why: str) -> None:
        """Something happened to the cluster: to the run's watcher (terminal, job log and
        status.json), or at least to stderr."""
        if self.watcher is not None:
            self.watcher(component, what, why)
        else:
            say(f"warning: {component}: {what}: {why}")

    def check_cancel(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise Cancelled(self.cancel.signum or signal.SIGTERM)

    @abstractmethod
    def stop(self) -> None:
        """Tear everything down. Idempotent, and safe after any failure, even before start."""

    def release(self) -> None:  # noqa: B027  (most backends keep nothing for the logs)
        """After the logs are drained: remove what `stop` kept so they could be read (stopped
        containers). Idempotent."""

    @abstractmethod
    def check_alive(self) -> None:
        """Raise ClusterError when the cluster died, so nobody waits for a corpse."""

    def log_sources(self, run: RunFolder) -> list[str]:
        """What the log sidecar ships into the store, as its `--source` forms."""
        return []

    def status(self) -> dict[str, Any]:
        return {
            "backend": self.name,
            "scheduler": self.handle.scheduler_address if self.handle else None,
            "dashboard": self.handle.dashboard_url if self.handle else None,
        }

    def scheduler_info(self, timeout: float = 10.0) -> dict[str, Any]:
        """The scheduler's own view (its `identity`): workers with their memory and threads."""

        async def ask() -> dict[str, Any]:
            async with self._rpc(timeout) as scheduler:
                return await scheduler.identity()

        return asyncio.run(ask())

    def ask_scheduler(self, op: str, timeout: float = 10.0, **arguments: Any) -> Any:
        """One operation of the scheduler's (`adaptive_target`, `retire_workers`)."""

        async def ask() -> Any:
            async with self._rpc(timeout) as scheduler:
                return await getattr(scheduler, op)(**arguments)

        return asyncio.run(ask())

    def identity(self) -> dict[str, Any]:
        """The scheduler's identity, for watching it (a backend may ask another way)."""
        return self.scheduler_info(timeout=2.0)

    def task_counts(self, timeout: float = 2.0) -> dict[str, int]:
        """How many tasks the scheduler holds in each state, for the progress of a step. A
        scheduler daskstep started itself also says `queued` and `done` (its own op); another
        gives `get_task_prefix_states` (processing, memory, erred, waiting, released)."""
        from daskstep.backends.cluster_side import TASK_COUNTS_OP

        async def ours() -> dict[str, int]:
            async with self._rpc(timeout) as scheduler:
                return await getattr(scheduler, TASK_COUNTS_OP)()

        if self._own_counts is not False:
            try:
                counts = asyncio.run(ours())
                self._own_counts = True
                return counts
            except Exception:
                if self._own_counts:  # it answered before: this is a failure, not an old one
                    raise
                self._own_counts = False

        async def ask() -> dict[str, dict[str, int]]:
            async with self._rpc(timeout) as scheduler:
                return await scheduler.get_task_prefix_states()

        totals: dict[str, int] = {}
        for states in asyncio.run(ask()).values():
            for state, n in states.items():
                totals[state] = totals.get(state, 0) + int(n)
        return totals

    def task_stream(self, start: float | None = None, timeout: float = 10.0) -> list[dict]:
        """The scheduler's task stream since `start` (seconds since the epoch): what ran where
        and when, for the report. The first call installs the scheduler's recorder, so call it
        once the cluster is up; a backend whose scheduler cannot be asked returns []."""

        async def ask() -> list[dict]:
            async with self._rpc(timeout) as scheduler:
                return await scheduler.get_task_stream(start=start)

        return asyncio.run(ask())

    def wait_ready(
        self,
        workers: int,
        timeout: float,
        progress: Progress | None = None,
        cancel: StopSignal | None = None,
    ) -> int:
        """Block until `workers` workers are registered with the scheduler."""
        self.cancel = cancel or self.cancel
        deadline = time.monotonic() + timeout

        async def wait() -> int:
            from daskstep.backends.cluster_side import WORKERS_OP

            async with self._rpc(max(timeout, 1.0)) as scheduler:
                seen = -1

                async def count() -> int:
                    nonlocal seen
                    if self.own_scheduler:  # answers when it changes: no poll's delay
                        op = getattr(scheduler, WORKERS_OP)
                        seen = await op(at_least=workers, seen=seen, wait=WORKERS_WAIT)
                    else:
                        seen = len((await scheduler.identity())["workers"])
                    return seen

                return await self._count_until(count, workers, deadline, timeout, progress)

        return asyncio.run(wait())

    async def _count_until(
        self,
        count: Callable[[], Awaitable[int]],
        workers: int,
        deadline: float,
        timeout: float,
        progress: Progress | None,
    ) -> int:
        """Ask `count` until it says `workers`, reporting each change; past the deadline,
        TooFewWorkers. A dead cluster or a cancel ends the wait at once."""
        seen = -1
        while True:
            n = await count()
            if n != seen and progress:
                progress(n, workers)
            seen = n
            if n >= workers:
                return n
            if time.monotonic() >= deadline:
                raise TooFewWorkers(
                    f"only {n} of {plural(workers, 'worker')} registered within {timeout:g} s"
                )
            self.check_alive()
            self.check_cancel()
            if not self.own_scheduler:  # ours waits in the count itself
                await asyncio.sleep(self.poll_interval)

    def _address(self) -> str:
        if self.handle is None:
            raise ClusterError("the cluster is not started")
        return self.handle.scheduler_address

    def __enter__(self) -> ClusterBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self.release()
