"""Cluster backends, all behind `ClusterBackend` (see base.py)."""

from __future__ import annotations

from daskstep.backends.base import ClusterBackend, ClusterHandle, ClusterSpec
from daskstep.errors import InputError, Problem

__all__ = ["ClusterBackend", "ClusterHandle", "ClusterSpec", "get_backend"]


def get_backend(name: str) -> ClusterBackend:
    if name == "local":
        from daskstep.backends.local import LocalBackend

        return LocalBackend()
    if name == "docker":
        from daskstep.backends.docker import DockerBackend

        return DockerBackend()
    raise InputError([Problem("--backend", f"'{name}' is not available yet; use --backend local")])
