"""Waits for the scheduler: exponential backoff with jitter under one overall deadline, and one
log line per state change rather than one per attempt."""

import random
import socket
import sys
import time
from typing import Callable, Optional, Tuple

from entrypoint.core import Readiness, SchedulerUnavailable, TooFewWorkers, UsageError


def normalise_uri(uri: str) -> str:
    """REANA passes `host:port`; Dask wants a scheme."""
    uri = uri.strip()
    if "://" not in uri:
        uri = "tcp://" + uri
    host_port(uri)  # validates
    return uri


def host_port(uri: str) -> Tuple[str, int]:
    rest = uri.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"scheduler address '{uri}' needs a host and a port, e.g. tcp://host:8786")
    return host.strip("[]"), int(port)


def backoff_delays(base: float = 0.02, cap: float = 2.0):
    """Full-jitter exponential backoff, as tenacity's wait_random_exponential."""
    attempt = 0
    while True:
        yield random.uniform(0, min(cap, base * 2**attempt))
        attempt += 1


def _count_workers(uri: str, timeout: float) -> Optional[int]:
    """Ask the scheduler itself, when this image has `distributed`; None otherwise."""
    try:
        import asyncio

        from distributed.core import rpc
    except Exception:
        return None

    async def ask() -> int:
        async with rpc(uri, timeout=timeout) as scheduler:
            return len((await scheduler.identity())["workers"])

    return asyncio.run(ask())


class SchedulerWaiter:
    def __init__(
        self,
        uri: Optional[str],
        timeout: float = 300.0,
        workers: int = 0,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    ) -> None:
        self.uri = normalise_uri(uri) if uri else None
        self.timeout = timeout
        self.workers = workers
        self.log = log

    def wait(self) -> Readiness:
        if not self.uri:
            return Readiness()
        start = time.monotonic()
        deadline = start + self.timeout
        host, port = host_port(self.uri)
        state = ""
        state_changes = 0
        workers: Optional[int] = None
        for delay in backoff_delays():
            remaining = deadline - time.monotonic()
            try:
                with socket.create_connection((host, port), timeout=max(min(remaining, 2.0), 0.05)):
                    pass
                if self.workers > 0:
                    workers = _count_workers(self.uri, max(min(remaining, 5.0), 0.5))
                    new = "ready" if workers is None or workers >= self.workers else "workers"
                else:
                    new = "ready"
            except OSError:
                new = "waiting"
            if new != state:
                state = new
                elapsed = time.monotonic() - start
                if new == "ready":
                    if state_changes:  # quiet on the happy path: only a wait is news
                        self.log(
                            f"daskstep-entrypoint: scheduler {self.uri} ready after {elapsed:.2f} s"
                        )
                    return Readiness(self.uri, workers)
                state_changes += 1
                if new == "waiting":
                    self.log(f"daskstep-entrypoint: waiting for scheduler {self.uri}")
                else:
                    self.log(f"daskstep-entrypoint: {workers} of {self.workers} workers; waiting")
            if time.monotonic() + 0.001 >= deadline:
                break
            time.sleep(min(delay, max(deadline - time.monotonic(), 0)))
        if state == "workers":
            raise TooFewWorkers(
                f"only {workers} of {self.workers} workers within {self.timeout:g} s"
            )
        raise SchedulerUnavailable(f"scheduler {self.uri} unreachable within {self.timeout:g} s")
