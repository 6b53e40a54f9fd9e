"""Docker container logs into the store, through a thin client layer that tests replace with a fake.

The labels the Docker backend must put on the containers of a run:
- `daskstep.run=<run id>`: every container of the run (the source lists by this one, or by the
  labels it is given);
- `daskstep.component=job|scheduler|worker`: its stream; containers without it are ignored;
- `daskstep.worker=<name>` on workers: the stream `worker/<name>` (default: the container name).

Docker keeps a container's log across its restarts, so a restart needs no `previous` read: the
source follows again from the store's last timestamp once the container runs again.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from sidecar.follow import FollowingSource, LogResponse, Target
from sidecar.store import COMPONENTS

RUN_LABEL = "daskstep.run"
COMPONENT_LABEL = "daskstep.component"
WORKER_LABEL = "daskstep.worker"
LIVE_STATES = ("created", "restarting", "running", "paused")


@dataclass(frozen=True)
class ContainerInfo:
    id: str
    name: str
    labels: Mapping[str, str]
    state: str  # created, restarting, running, removing, paused, exited, dead
    created_ns: int = 0


class DockerLogClient(Protocol):
    """The two calls the source needs; the real one is `DockerSDKLogClient`."""

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]: ...

    def read_log(self, container_id: str, *, since_ns: int | None, follow: bool) -> LogResponse:
        """The container's log with `timestamps=True`, from `since_ns` (or earlier) on."""
        ...


class DockerSDKLogClient:
    """`DockerLogClient` on the `docker` SDK (its low-level API: one list call, no inspects)."""

    def __init__(self, client: Any = None) -> None:
        if client is None:
            import docker

            client = docker.from_env()
        self.api = client.api

    def list_containers(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        rows = self.api.containers(
            all=True, filters={"label": [f"{k}={v}" for k, v in labels.items()]}
        )
        return [
            ContainerInfo(
                id=row["Id"],
                name=(row.get("Names") or ["/" + row["Id"][:12]])[0].lstrip("/"),
                labels=row.get("Labels") or {},
                state=row.get("State") or "",
                created_ns=int(row.get("Created") or 0) * 1_000_000_000,
            )
            for row in rows
        ]

    def read_log(self, container_id: str, *, since_ns: int | None, follow: bool) -> LogResponse:
        since = None
        if since_ns:
            # `since` is sent as a decimal string of seconds: whole milliseconds print exactly,
            # and one millisecond less keeps the line at since_ns whether the engine's bound is
            # inclusive or not; the source drops the surplus.
            since = max(since_ns // 1_000_000 - 1, 1) / 1000
        tty = bool(self.api.inspect_container(container_id)["Config"].get("Tty"))
        stream = self.api.logs(
            container_id, stream=True, follow=follow, timestamps=True, since=since
        )
        return _Frames(stream, messages=not tty)


class _Frames:
    """The SDK's log stream. Without a TTY the engine sends one multiplexed frame per log
    message and the SDK yields one frame per item, so each item starts with its prefix."""

    def __init__(self, stream: Any, messages: bool) -> None:
        self._stream = stream
        self.messages = messages

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def close(self) -> None:
        self._stream.close()


class DockerSource(FollowingSource):
    """The containers of one daskstep run; see the module doc for the labels."""

    def __init__(
        self, client: DockerLogClient, labels: Mapping[str, str] | str, **options: Any
    ) -> None:
        """`labels` select the containers; a plain string is a run id (`daskstep.run=ID`)."""
        super().__init__(**options)
        self.client = client
        self.labels = {RUN_LABEL: labels} if isinstance(labels, str) else dict(labels)
        self.key = "docker:" + ",".join(f"{k}={v}" for k, v in sorted(self.labels.items()))

    def discover(self) -> list[Target]:
        targets = []
        for c in self.client.list_containers(self.labels):
            component = c.labels.get(COMPONENT_LABEL)
            if component not in COMPONENTS:
                continue
            name = None
            if component == "worker":
                name = c.labels.get(WORKER_LABEL) or c.name
                if "/" in name or name.startswith("."):  # it names a file in the store
                    name = c.name
            targets.append(
                Target(
                    component=component,
                    name=name,
                    key=c.id,
                    order=(c.created_ns, c.name),
                    readable=c.state != "created",
                    running=c.state in LIVE_STATES,
                    ref=c.id,
                )
            )
        return targets

    def open_log(
        self, target: Target, since_ns: int | None, *, previous: bool, follow: bool
    ) -> LogResponse:
        return self.client.read_log(target.ref, since_ns=since_ns, follow=follow)
