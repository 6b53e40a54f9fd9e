"""The Docker backend: the scheduler and each worker are containers of the analysis' own Dask
image (`resources.dask.image`), running that image's own `dask scheduler` / `dask worker`.

- Each worker gets the engine-enforced memory limit `single_worker_memory`, as many CPUs as
  threads, and `--init`; every container carries the run's labels (containers.py).
- The engine is the workers' nanny: `dask worker --no-nanny` under a restart policy, so each
  worker is one Python process, not two (a nanny imports distributed too): the cluster is ready
  in well under the time of the same containers started by hand. The worker gets the
  environment a Nanny would set (`distributed.nanny.*environ`: BLAS threads, malloc trim),
  comes back after a crash, an OOM kill or `Client.restart()`, and stops only when we stop it.
- The network is the engine's `network_mode` (tests: `host`, on loopback addresses).
- Readiness and worker counts come from the scheduler's HTTP `/json/identity.json`, which every
  distributed version serves, so the controller's own Dask need not speak to an old one; with
  `--adapt`, the scheduler's HTTP API says how many workers it wants and retires them
  (docker/scheduler_http.py), and a worker is a container started or let go.
- Teardown removes everything with the run's label, on every path; a reaper process
  (`daskstep sidecar reaper`) does it when the controller dies; `daskstep gc` when both did.
- The engine's `oom` events name the worker that was killed for memory, with its limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daskstep.backends.base import (
    ClusterBackend,
    ClusterHandle,
    ClusterSpec,
    Progress,
    nanny_environment,
)
from daskstep.backends.registry import Kind
from daskstep.docker.containers import (
    COMPONENT_LABEL,
    RUN_LABEL,
    WORKER_LABEL,
    in_parallel,
    listed,
    remove_run,
    run_labels,
    user_options,
)
from daskstep.docker.preflight import checked_images
from daskstep.docker.scheduler_http import SchedulerHTTP
from daskstep.docker.worker_pool import ContainerPool
from daskstep.errors import ClusterError, SchedulerLost, described
from daskstep.reaper import Reaper
from daskstep.record import RunFolder, new_run_id
from daskstep.scaling import scheduler_routes
from sidecar.lifecycle import StopSignal

if TYPE_CHECKING:
    from daskstep.credentials import Credentials
    from daskstep.seams import StepLauncher

STOP_GRACE_SECONDS = 10.0
SCHEDULER_START_TIMEOUT = 120.0  # an image's first start may be slow (a cold disk)


class DockerBackend(ClusterBackend, ContainerPool):
    name = "docker"

    def __init__(
        self,
        client: Any = None,
        network: str = "host",
        host: str = "127.0.0.1",
        run_id: str | None = None,
        tls: Any = None,
    ) -> None:
        super().__init__(tls)
        self.client = client
        self.network = network
        self.host = host
        self.run_id = run_id or new_run_id()
        self.http: SchedulerHTTP | None = None  # the scheduler's HTTP server
        self._reaper: Reaper | None = None
        self._events: Any = None
        self._stopping = False
        self._memory = ""
        self._answered = False
        self.pool: set[str] = set()
        self.start_worker: Callable[[str], str] | None = None  # a worker container of this run
        self.containers: dict[str, str] = {}  # worker name -> container id
        self.retiring: set[str] = set()  # their end is no news

    # -- start ----------------------------------------------------------------------------------
    def _start(self, spec: ClusterSpec, run: RunFolder) -> ClusterHandle:
        """All containers at once. The scheduler takes its own ports and says them in the
        scheduler file in the run's folder (the workspace is mounted at its own path), which
        the workers wait for: a port chosen here and taken by the scheduler seconds later may
        be another process's by then."""
        from daskstep.docker.images import docker_client, local_image

        if self.client is None:
            self.client = docker_client()
        image = local_image(self.client, spec.image or "", "resources.dask.image")
        # before any container: whatever happens to us from here on, it removes them
        self._reaper = Reaper("--label", f"{RUN_LABEL}={self.run_id}")
        self._memory = spec.memory
        scheduler_file = (run.folder / "scheduler.json").resolve()
        scheduler_file.unlink(missing_ok=True)  # a dead run's would mislead the workers
        self._watch_events()
        common = self._container_options(spec, run.workspace)
        before, after = nanny_environment(spec.environment)
        nanny_env = {**before, **after}
        tls = self.tls.cli_options() if self.tls else []  # its folder is mounted where it is
        scheduler = ["dask", "scheduler", "--host", self.host, "--port", "0", *tls]
        scheduler += ["--protocol", "tls"] if self.tls else []
        scheduler += ["--dashboard-address", f"{self.host}:0"]
        scheduler += ["--scheduler-file", str(scheduler_file)]
        scheduler_options = {**common, "name": f"{self.run_id}-scheduler",
                             "labels": run_labels(self.run_id, "scheduler")}  # fmt: skip
        if spec.adaptive:  # its HTTP API: how many workers it wants, and their retirement
            routes = {"DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": repr(scheduler_routes())}
            scheduler_options["environment"] = {**common["environment"], **routes}

        def worker(name: str) -> str:
            argv = ["dask", "worker", "--scheduler-file", str(scheduler_file)]
            argv += ["--name", name, "--host", self.host, *tls]
            argv += ["--nthreads", str(spec.threads), "--memory-limit", str(spec.memory_bytes)]
            argv += ["--death-timeout", "60", "--dashboard-address", f"{self.host}:0"]
            argv += ["--no-nanny"]  # the engine is the nanny: see the module doc
            options = {
                **common,
                "name": f"{self.run_id}-{name}",
                "labels": run_labels(self.run_id, "worker", **{WORKER_LABEL: name}),
                "mem_limit": spec.memory_bytes,
                "memswap_limit": spec.memory_bytes,  # no swap: the limit is the limit
                "nano_cpus": int(spec.threads * 1e9),
                "restart_policy": {"Name": "unless-stopped"},
                "environment": {**common["environment"], **nanny_env},
            }
            container = self.client.containers.run(image, argv, **options)
            self.containers[name] = container.id
            return container.id

        self.start_worker = worker
        self.pool = {f"worker-{i}" for i in range(spec.workers)}
        self.next_worker = spec.workers
        try:
            in_parallel(
                [lambda: self.client.containers.run(image, scheduler, **scheduler_options)]
                + [lambda n=name: worker(n) for name in sorted(self.pool)]
            )  # fmt: skip
        except Exception as e:  # the engine's refusal, in its own words; stop() cleans up
            raise ClusterError(f"the Docker engine refused the cluster: {described(e)}") from e
        identity = self._await_scheduler_file(scheduler_file, SCHEDULER_START_TIMEOUT)
        host = self.host if ":" not in self.host else f"[{self.host}]"
        self.http = SchedulerHTTP(f"http://{host}:{identity['services']['dashboard']}")
        return ClusterHandle(
            scheduler_address=identity["address"], dashboard_url=f"{self.http.base}/status"
        )

    def _await_scheduler_file(self, path: Path, timeout: float) -> dict[str, Any]:
        """The scheduler's identity once it listens; its container's end, said in its last
        line, if it never does (a cancel ends the wait too)."""
        deadline = time.monotonic() + timeout
        looked = time.monotonic()
        while True:
            self.check_cancel()
            with contextlib.suppress(OSError, ValueError):
                identity = json.loads(path.read_text())
                if identity.get("address") and "dashboard" in identity.get("services", {}):
                    return identity
            if time.monotonic() - looked > 0.5:  # an engine call: not every turn
                looked = time.monotonic()
                self.check_alive()
            if time.monotonic() > deadline:
                raise ClusterError(f"the scheduler container did not listen within {timeout:g} s")
            time.sleep(0.05)

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

    # -- watching -------------------------------------------------------------------------------
    def _watch_events(self) -> None:
        self._events = self.client.events(
            filters={"label": f"{RUN_LABEL}={self.run_id}", "event": ["oom", "die"]}, decode=True
        )
        threading.Thread(target=self._read_events, daemon=True, name="docker-events").start()

    def _read_events(self) -> None:
        """The engine's word on the run's containers: an OOM kill, or a container that died
        (exit 0 is `Client.restart()`, not news; the die after an OOM kill was said already).
        The restart policy brings workers back."""
        oom_killed: set[str] = set()
        with contextlib.suppress(Exception):  # the stream closes when we stop
            for event in self._events:
                actor = event.get("Actor") or {}
                attributes = actor.get("Attributes") or {}
                component = attributes.get(COMPONENT_LABEL, "container")
                name = attributes.get(WORKER_LABEL, attributes.get("name", "?"))
                if self._stopping:
                    return
                if event.get("status", event.get("Action")) == "oom":
                    oom_killed.add(actor.get("ID", ""))
                    restart = "; the engine restarts it" if component == "worker" else ""
                    why = f"the engine killed it at its memory limit of {self._memory} (OOMKilled)"
                    self.report(f"{component} {name}", "killed for memory (OOM)", why + restart)
                    continue
                code = attributes.get("exitCode", "?")
                if component not in ("scheduler", "worker"):  # a step's end is the step's
                    continue
                if component == "worker" and name in self.retiring:
                    continue
                if actor.get("ID", "") in oom_killed:
                    oom_killed.discard(actor.get("ID", ""))
                elif code != "0":
                    restart = "; the engine restarts it" if component == "worker" else ""
                    self.report(f"{component} {name}", "lost", f"it exited with {code}{restart}")

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

        async def count() -> int:
            return len(self.identity().get("workers", {}))

        return asyncio.run(self._count_until(count, workers, deadline, timeout, progress))

    def identity(self) -> dict[str, Any]:
        if self.http is None:
            return self.scheduler_info()
        try:
            identity = self.http.identity()
        except (OSError, ValueError):  # not answering yet
            return {}
        self._answered = True  # from now on, a scheduler gone is a scheduler lost
        return identity

    def task_counts(self, timeout: float = 2.0) -> dict[str, int]:
        """The scheduler's HTTP counts (any distributed version serves them); raises when the
        scheduler does not answer."""
        if self.http is None:
            return super().task_counts(timeout)
        return self.http.counts(timeout)

    def check_alive(self) -> None:
        if self.client is None:
            raise ClusterError("the cluster is not started")
        found = listed(self.client, f"{RUN_LABEL}={self.run_id}", f"{COMPONENT_LABEL}=scheduler")
        if not found:
            raise self._lost("the scheduler container is gone")
        if found[0].get("State") not in ("created", "running"):
            last = "no output"
            with contextlib.suppress(Exception):
                tail = self.client.api.logs(found[0]["Id"], tail=1)
                last = tail.decode(errors="replace").strip() or last
            raise self._lost(f"the scheduler container {found[0].get('State')}: {last}")

    def _lost(self, message: str) -> ClusterError:
        """Once it answered, a scheduler gone is lost (71); before, the cluster failed to
        start (69)."""
        return SchedulerLost(message) if self._answered else ClusterError(message)

    # -- stop -----------------------------------------------------------------------------------
    def stop(self) -> None:
        """Stop every container (SIGTERM through tini, then KILL after a grace); they stay, so
        that the log sidecar reads their last lines, until `release`."""
        self._stopping = True
        if self.client is None:
            return
        found = listed(self.client, f"{RUN_LABEL}={self.run_id}", stopped_too=False)
        last = [r["Id"] for r in found if r["Labels"].get(COMPONENT_LABEL) == "scheduler"]
        # workers first, while the scheduler can still take their goodbye (else they wait for it)
        for batch in ([r["Id"] for r in found if r["Id"] not in last], last):
            in_parallel([lambda c=c: self.stop_container(c) for c in batch])

    def stop_container(self, cid: str) -> None:
        """SIGTERM through tini, then KILL after the grace; a stop, so no restart policy acts."""
        with contextlib.suppress(Exception):
            self.client.api.stop(cid, timeout=int(STOP_GRACE_SECONDS))

    def release(self) -> None:
        self._stopping = True
        if self.client is not None:
            remove_run(self.client, self.run_id)
        if self._events is not None:
            with contextlib.suppress(Exception):
                self._events.close()
            self._events = None
        if self._reaper is not None:  # nothing left for it: let it go
            self._reaper.let_go()
            self._reaper = None

    def log_sources(self, run: RunFolder) -> list[str]:
        return [f"docker:{RUN_LABEL}={self.run_id}"]

    def status(self) -> dict[str, Any]:
        return {**super().status(), "run_id": self.run_id}


class DockerKind(Kind):
    """The scheduler and workers in containers of the cluster's image, each step in its own
    image's container; the images are checked before anything starts."""

    name = "docker"
    extra = "docker"
    collects = True

    def check(self) -> None:
        self.client, _ = checked_images(self.workflow, self.options.allow_version_mismatch)

    def cluster(self, run_id: str, tls: Any, systems: dict[str, Any]) -> ClusterBackend:
        return DockerBackend(self.client, run_id=run_id, tls=tls)

    def step_launcher(
        self,
        cluster: ClusterBackend,
        record: RunFolder,
        credentials: Credentials | None,
        here: StepLauncher,
    ) -> StepLauncher:
        from daskstep.docker.step_launcher import DockerStepLauncher
        from daskstep.pack import pack

        assert self.workflow.dask is not None and isinstance(cluster, DockerBackend)
        return DockerStepLauncher(
            self.client,
            cluster.run_id,
            record.workspace,
            pack(record.folder / "entrypoint.pyz"),
            record.raw / "job.log",
            default_image=self.workflow.dask.image,
            credentials=credentials.folder if credentials else None,
        )

    @classmethod
    def gc(cls, everything: bool) -> None:
        from daskstep.docker.containers import abandoned_runs, remove_run
        from daskstep.docker.images import docker_client
        from daskstep.words import plural

        client = docker_client()
        runs = abandoned_runs(client, everything=everything)
        for run_id in sorted(runs):
            print(f"{run_id}: removed {plural(remove_run(client, run_id), 'container')}")
        if not runs:
            print("nothing to remove")

    @classmethod
    def bare_cluster(cls) -> ClusterBackend:
        return DockerBackend()
