"""The run's TLS on Kubernetes: its CA and certificates travel as a Secret owned by the run's
root, mounted read-only into the scheduler, the workers and the steps. Nothing else in the
cluster holds a certificate of the run's CA, so nothing else reaches the scheduler."""

from __future__ import annotations

import base64
import shutil
import tempfile
from pathlib import Path
from typing import Any

from daskstep.kube.objects import KubeOptions, metadata
from daskstep.tls import RunTLS

TLS_DIR = "/daskstep/tls"
VOLUME = "daskstep-tls"
MOUNT = {"name": VOLUME, "mountPath": TLS_DIR, "readOnly": True}


def secret_name(options: KubeOptions) -> str:
    return f"{options.run_id}-tls"


def make_files(run_id: str) -> dict[str, bytes]:
    """A fresh CA and certificates, read into memory; the folder they were made in is gone
    before this returns."""
    folder = Path(tempfile.mkdtemp(prefix="daskstep-tls-"))
    try:
        tls = RunTLS.create(folder / "tls", run_id)
        return {name: path.read_bytes() for name, path in tls.files().items()}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def build_tls_secret(options: KubeOptions, files: dict[str, bytes]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(options, secret_name(options), "tls"),
        "type": "Opaque",
        "data": {name: base64.b64encode(data).decode() for name, data in sorted(files.items())},
    }


def tls_volume(options: KubeOptions) -> dict[str, Any]:
    # 0440: readable by the pod's group too, as images run as a user of their own
    return {"name": VOLUME, "secret": {"secretName": secret_name(options), "defaultMode": 0o440}}


def cluster_args() -> list[str]:
    """`dask scheduler` / `dask worker` options for the cluster's side."""
    tls = RunTLS(Path(TLS_DIR))
    return tls.cli_options()
