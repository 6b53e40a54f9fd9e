"""Compare the step's Dask with the cluster's, when the step's image has `distributed`.

`Client.get_versions(check=True)` only warns, and only about some packages, so the dicts are
compared here. Python is compared by major.minor, the rest exactly.
"""

from __future__ import annotations

from entrypoint.core import VersionMismatch

PACKAGES = ("python", "dask", "distributed", "msgpack", "cloudpickle")


class Mismatch:
    def __init__(self, package: str, client: str | None, scheduler: str | None, workers: list[str]):
        self.package, self.client, self.scheduler, self.workers = (
            package,
            client,
            scheduler,
            workers,
        )


def _normal(package: str, version: str | None) -> str | None:
    if version and package == "python":
        return ".".join(version.split(".")[:2])
    return version


def _packages(versions: dict) -> dict[str, str | None]:
    found = (versions or {}).get("packages", {})
    return {p: _normal(p, found.get(p)) for p in PACKAGES}


def compare(client: dict, scheduler: dict, workers: dict[str, dict]) -> list[Mismatch]:
    mine, theirs = _packages(client), _packages(scheduler)
    each = [_packages(w) for w in workers.values() if isinstance(w, dict)]
    out = []
    for package in PACKAGES:
        seen = sorted({w[package] or "?" for w in each})
        if any(v != mine[package] for v in [theirs[package], *(w[package] for w in each)]):
            out.append(Mismatch(package, mine[package], theirs[package], seen))
    return out


def table(mismatches: list[Mismatch]) -> str:
    rows = [("package", "step", "scheduler", "workers")]
    rows += [
        (m.package, m.client or "-", m.scheduler or "-", ",".join(m.workers) or "-")
        for m in mismatches
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def collect(uri: str, timeout: float) -> list[Mismatch] | None:
    """The mismatches; None when this image has no `distributed` to compare with."""
    try:  # distributed first: without it, asyncio would be a slow import for nothing
        from distributed.core import rpc
        from distributed.versions import get_versions

        from entrypoint.waiter import connection_args
    except Exception:
        return None
    import asyncio

    async def ask():
        scheduler = rpc(uri, timeout=timeout, connection_args=connection_args(uri))
        try:
            theirs = await scheduler.versions(packages=[])
            workers = await scheduler.broadcast(
                msg={"op": "versions", "packages": []}, on_error="ignore"
            )
        finally:
            await scheduler.close_rpc()
        return theirs, workers

    theirs, workers = asyncio.run(ask())
    return compare(get_versions(), theirs, workers)


class VersionCheck:
    """off: skip; warn: print the table; fail: print it and refuse to run (exit 78)."""

    def __init__(self, mode: str, timeout: float = 10.0, log=print) -> None:
        self.mode = mode
        self.timeout = timeout
        self.log = log

    def check(self, uri: str | None) -> None:
        if self.mode == "off" or not uri:
            return
        try:
            mismatches = collect(uri, self.timeout)
        except Exception as e:  # a failed comparison must not fail the step in warn mode
            if self.mode == "fail":
                raise VersionMismatch(f"cannot compare versions with {uri}: {e}") from None
            self.log(f"daskstep-entrypoint: cannot compare versions with {uri}: {e}")
            return
        if not mismatches:
            return
        names = ", ".join(m.package for m in mismatches)
        self.log(f"daskstep-entrypoint: version mismatch with the cluster ({names}):")
        self.log(table(mismatches))
        if self.mode == "fail":
            raise VersionMismatch(f"version mismatch with the cluster: {names}")
