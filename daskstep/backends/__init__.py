"""Cluster backends, all behind `ClusterBackend` (see base.py); which there are: registry.py.

The names are looked up when first used (PEP 562): the registry sits in this package, and the
command line that names its backends must not import dask for that (0.2 s at every command)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from daskstep.backends.base import ClusterBackend, ClusterHandle, ClusterSpec

__all__ = ["ClusterBackend", "ClusterHandle", "ClusterSpec", "get_backend"]


def __getattr__(name: str) -> Any:
    if name in ("ClusterBackend", "ClusterHandle", "ClusterSpec"):
        from daskstep.backends import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_backend(name: str) -> ClusterBackend:
    """A backend's cluster without a workflow's settings (local, docker): benches and tests."""
    from daskstep.backends.registry import kind_of

    return kind_of(name).bare_cluster()
