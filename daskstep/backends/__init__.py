"""Cluster backends, all behind `ClusterBackend` (see base.py); which there are: registry.py."""

from __future__ import annotations

from daskstep.backends.base import ClusterBackend, ClusterHandle, ClusterSpec

__all__ = ["ClusterBackend", "ClusterHandle", "ClusterSpec", "get_backend"]


def get_backend(name: str) -> ClusterBackend:
    """A backend's cluster without a workflow's settings (local, docker): benches and tests."""
    from daskstep.backends.registry import kind_of

    return kind_of(name).bare_cluster()
