"""Adaptive scaling on Docker (scaling.py): a worker is a container of the run, started
or let go, and the scheduler, whatever its distributed version, is asked through its HTTP API
(scheduler_http.py) how many workers it wants, which to lose, and to retire them, so that their
data moves first."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

from daskstep.docker.containers import in_parallel
from daskstep.docker.scheduler_http import SchedulerHTTP, cheapest
from daskstep.scaling import SchedulerPool
from daskstep.words import plural


class ContainerPool(SchedulerPool):
    """Mixed into the DockerBackend, which starts the containers and fills these in."""

    http: SchedulerHTTP | None
    client: Any
    start_worker: Callable[[str], str] | None
    containers: dict[str, str]  # worker name -> container id
    retiring: set[str]

    def stop_container(self, cid: str) -> None:
        raise NotImplementedError

    def _workers(self) -> dict[str, Any]:
        assert self.http is not None
        return self.http.identity().get("workers") or {}

    def observed(self) -> set[str]:
        return {str(info.get("name")) for info in self._workers().values()}

    def wanted(self) -> int:
        assert self.http is not None
        return self.http.adaptive_target()

    def waiting(self) -> str:
        assert self.http is not None
        return f"{plural(self.http.to_run(), 'task')} to run"

    def unneeded(self, n: int) -> list[str]:
        return cheapest(self._workers(), n) if n > 0 else []

    def add_workers(self, names: list[str]) -> None:
        assert self.start_worker is not None
        in_parallel([lambda n=name, start=self.start_worker: start(n) for name in names])

    def let_go(self, name: str, retiring: bool) -> None:
        """A retired worker exits by itself, and the engine must not start it again."""
        policy = {"Name": "no" if retiring else "unless-stopped"}
        (self.retiring.add if retiring else self.retiring.discard)(name)
        with contextlib.suppress(Exception):  # gone already: nothing to restart
            self.client.api.update_container(self.containers[name], restart_policy=policy)

    def retire_registered(self, names: list[str]) -> dict[str, Any]:
        assert self.http is not None
        addresses = {str(info.get("name")): a for a, info in self._workers().items()}
        retired = self.http.retire([addresses[n] for n in names if n in addresses], 60.0)
        # An older worker may stay up once out of the scheduler: its container stops anyway.
        gone = [self.containers[str(info.get("name"))] for info in retired.values()
                if str(info.get("name")) in self.containers]  # fmt: skip
        threading.Thread(
            target=in_parallel,
            args=([lambda c=c: self.stop_container(c) for c in gone],),
            daemon=True,
        ).start()
        return retired

    def cancel_worker(self, name: str) -> bool:
        """A container still starting: it goes before it registers."""
        if name not in self.containers:
            return False
        self.let_go(name, retiring=True)
        with contextlib.suppress(Exception):  # ended meanwhile: the same
            self.client.api.kill(self.containers[name])
        return True
