"""The Docker backend: the scheduler and each worker are containers of the analysis' own Dask
image (`resources.dask.image`), running that image's own `dask scheduler` / `dask worker`.

- Each worker gets the engine-enforced memory limit `single_worker_memory`, as many CPUs as
  threads, and `--init`; every container carries the run's labels (containers.py).
- The network is the engine's `network_mode` (tests: `host`, on loopback addresses).
- Readiness and worker counts come from the scheduler's HTTP `/json/identity.json`, which every
  distributed version serves, so the controller's own Dask need not speak to an old one.
- Teardown removes everything with the run's label, on every path; a reaper process
  (`daskstep sidecar reaper`) does it when the controller dies; `daskstep gc` when both did.
- The engine's `oom` events name the worker that was killed for memory, with its limit.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from daskstep.backends.base import ClusterBackend, ClusterHandle, ClusterSpec, Progress
from daskstep.containers import (
    COMPONENT_LABEL,
    RUN_LABEL,
    WORKER_LABEL,
    new_run_id,
    remove_run,
    run_labels,
    user_options,
)
from daskstep.errors import ClusterError, TooFewWorkers
from daskstep.secret_env import child_env
from sidecar.lifecycle import StopSignal

SCHEDULER_START_TIMEOUT = 60.0
STOP_GRACE_SECONDS = 10.0
ADDRESS = re.compile(r"Scheduler at:\s+(\S+)")
DASHBOARD = re.compile(r"[Dd]ashboard at:\s+(\S+)")

Event = Callable[[str, str, str], None]  # (component, what, why)


class DockerBackend(ClusterBackend):
    name = "docker"

    def __init__(self, client: Any = None, network: str = "host", host: str = "127.0.0.1") -> None:
        super().__init__()
        self.client = client
        self.network = network
        self.host = host
        self.run_id = new_run_id()
        self.http: str | None = None  # the scheduler's HTTP base, for identity.json
        self.on_event: Event | None = None
        self._reaper: subprocess.Popen[bytes] | None = None
        self._events: Any = None
        self._stopping = False
        self._memory = ""

    # -- start ----------------------------------------------------------------------------------
    def _start(self, spec: ClusterSpec, workspace: Path) -> ClusterHandle:
        from daskstep.images import docker_client, local_image

        if self.client is None:
            self.client = docker_client()
        image = local_image(self.client, spec.image or "", "resources.dask.image")
        self._start_reaper()
        self._memory = spec.memory
        common = self._container_options(spec, workspace)
        scheduler = self.client.containers.run(
            image,
            ["dask", "scheduler", "--host", self.host, "--port", "0"]
            + ["--dashboard-address", f"{self.host}:0"],
            name=f"{self.run_id}-scheduler",
            labels=run_labels(self.run_id, "scheduler"),
            **common,
        )
        address, dashboard = self._addresses(scheduler)
        self.http = re.sub(r"/status$", "", dashboard) if dashboard else None
        self._watch_events()
        for i in range(spec.workers):
            name = f"worker-{i}"
            self.client.containers.run(
                image,
                ["dask", "worker", address, "--name", name, "--host", self.host]
                + ["--nthreads", str(spec.threads), "--memory-limit", str(spec.memory_bytes)]
                + ["--death-timeout", "60", "--dashboard-address", f"{self.host}:0"],
                name=f"{self.run_id}-{name}",
                labels=run_labels(self.run_id, "worker", **{WORKER_LABEL: name}),
                mem_limit=spec.memory_bytes,
                memswap_limit=spec.memory_bytes,  # no swap: the limit is the limit
                nano_cpus=int(spec.threads * 1e9),
                **common,
            )
        return ClusterHandle(scheduler_address=address, dashboard_url=dashboard)

    def _container_options(self, spec: ClusterSpec, workspace: Path) -> dict[str, Any]:
        """The workspace at its own path (REANA mounts it into the workers too), credentials
        read-only, the run's environment, and the invoking user."""
        volumes = {str(workspace): {"bind": str(workspace), "mode": "rw"}}
        for path in spec.read_only:
            volumes[str(path)] = {"bind": str(path), "mode": "ro"}
        user = user_options()
        environment = {**user.pop("environment", {}), **spec.environment}
        return dict(
            detach=True,
            init=True,
            network_mode=self.network,
            volumes=volumes,
            environment=environment,
            **user,
        )

    def _start_reaper(self) -> None:
        """Before any container: whatever happens to us from here on, it removes them."""
        argv = [sys.executable, "-m", "daskstep", "sidecar", "reaper"]
        argv += ["--label", f"{RUN_LABEL}={self.run_id}"]
        self._reaper = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,  # a Ctrl-C to our group must not take it first
        )

    def _addresses(self, scheduler: Any) -> tuple[str, str | None]:
        """The scheduler's address and dashboard, from its own log (it chose free ports)."""
        deadline = time.monotonic() + SCHEDULER_START_TIMEOUT
        while time.monotonic() < deadline:
            self.check_cancel()
            text = scheduler.logs().decode(errors="replace")
            if found := ADDRESS.search(text):
                dashboard = DASHBOARD.search(text)
                return found.group(1), dashboard.group(1) if dashboard else None
            scheduler.reload()
            if scheduler.status in ("exited", "dead"):
                last = text.strip().splitlines()[-1:] or ["no output"]
                raise ClusterError(f"the scheduler container exited: {last[0]}")
            time.sleep(0.05)
        raise ClusterError(f"the scheduler did not start within {SCHEDULER_START_TIMEOUT:g} s")

    # -- watching -------------------------------------------------------------------------------
    def _watch_events(self) -> None:
        self._events = self.client.events(
            filters={"label": f"{RUN_LABEL}={self.run_id}", "event": ["oom"]}, decode=True
        )
        threading.Thread(target=self._read_events, daemon=True, name="docker-events").start()

    def _read_events(self) -> None:
        with contextlib.suppress(Exception):  # the stream closes when we stop
            for event in self._events:
                attributes = (event.get("Actor") or {}).get("Attributes") or {}
                component = attributes.get(COMPONENT_LABEL, "container")
                name = attributes.get(WORKER_LABEL, attributes.get("name", "?"))
                why = f"killed for memory by the engine (OOMKilled; limit {self._memory})"
                if self.on_event is not None and not self._stopping:
                    self.on_event(f"{component} {name}", "out of memory", why)

    def wait_ready(
        self,
        workers: int,
        timeout: float,
        progress: Progress | None = None,
        cancel: StopSignal | None = None,
    ) -> int:
        """Through the scheduler's HTTP identity, which any distributed version serves."""
        self.cancel = cancel or self.cancel
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            count = len(self.identity().get("workers", {}))
            if count != seen and progress:
                progress(count, workers)
            seen = count
            if count >= workers:
                return count
            if time.monotonic() >= deadline:
                raise TooFewWorkers(
                    f"only {count} of {workers} workers registered within {timeout:g} s"
                )
            self.check_alive()
            self.check_cancel()
            time.sleep(self.poll_interval)

    def identity(self) -> dict[str, Any]:
        if self.http is None:
            return self.scheduler_info()
        url = f"{self.http}/json/identity.json"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (OSError, ValueError):  # not answering yet
            return {}

    def check_alive(self) -> None:
        if self.client is None:
            raise ClusterError("the cluster is not started")
        filters = {"label": [f"{RUN_LABEL}={self.run_id}", f"{COMPONENT_LABEL}=scheduler"]}
        found = self.client.containers.list(all=True, filters=filters)
        if not found or found[0].status not in ("created", "running"):
            state = found[0].attrs.get("State", {}) if found else {}
            raise ClusterError(
                f"the scheduler container is gone (exit code {state.get('ExitCode', '?')})"
            )

    # -- stop -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every container (SIGTERM through tini, then KILL after a grace); they stay, so
        that the log sidecar reads their last lines, until `release`."""
        self._stopping = True
        if self.client is None:
            return
        found = self.client.containers.list(filters={"label": f"{RUN_LABEL}={self.run_id}"})
        for container in found:
            with contextlib.suppress(Exception):
                container.kill(signal="SIGTERM")
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for container in found:
            with contextlib.suppress(Exception):
                container.wait(timeout=max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(Exception):
                container.kill()  # still there after the grace

    def release(self) -> None:
        self._stopping = True
        if self.client is not None:
            remove_run(self.client, self.run_id)
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
            self._events = None
        reaper, self._reaper = self._reaper, None
        if reaper is not None:  # nothing left for it: let it go
            with contextlib.suppress(OSError):
                reaper.stdin.close()  # type: ignore[union-attr]
            try:
                reaper.wait(timeout=30)
            except subprocess.TimeoutExpired:
                reaper.kill()
                reaper.wait()

    def log_sources(self, workspace: Path) -> list[str]:
        return [f"docker:{RUN_LABEL}={self.run_id}"]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "run_id": self.run_id}
