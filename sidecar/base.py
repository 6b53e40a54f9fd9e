"""What every log source implements, so the sidecar loop treats files, containers and pods alike.

The delivery rule is the same for all: data goes into the store, the store is synced, and only
then is the source's state checkpointed. After a crash a source restores its checkpoint and
then skips whatever the store already holds beyond it, so each line lands exactly once.
"""

from __future__ import annotations

from typing import Any, Protocol

from sidecar.store import LogStore


class Source(Protocol):
    key: str  # stable, unique: the source's entry in the checkpoint file
    # The last poll changed where the source reads (another file of a stream): its checkpoint
    # must be durable before the next poll reads on, or a crash would read the new file twice.
    switched: bool

    def restore(self, state: dict[str, Any] | None, store: LogStore) -> None:
        """Resume from the last checkpoint (None at first start), reconciled with the store."""

    def poll(self, store: LogStore, final: bool = False) -> int:
        """Move what is available into the store without blocking; how much moved (lines,
        or at least 1 when bytes were read into a line not complete yet), 0 when nothing did.

        With `final` (shutdown), also flush lines held back because they had no newline yet.
        Memory stays bounded: a source reads at most a bounded amount per call.
        """

    def draining(self) -> bool:
        """At shutdown, after a final poll: whether reads are still on their way (a container's
        last lines); the caller polls again until False."""

    def state(self) -> dict[str, Any]:
        """JSON-able position, saved only after the store has synced what poll() wrote."""

    def close(self) -> None: ...
