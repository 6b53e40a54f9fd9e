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


FILES = ("ca.pem", "client-key.pem", "client.pem", "cluster-key.pem", "cluster.pem")


def files_from(folder: Path, run_id: str) -> tuple[dict[str, bytes], bool]:
    """The run's TLS files in `folder` (`render --tls-dir`): read when all are there, made
    there when none is (the folder 0700, keys 0600), so that rendering again gives the same
    objects. Returns them and whether they were made now. A folder with some of them, or with
    expired certificates, is the user's input error."""
    from daskstep.errors import InputError, Problem

    def refuse(message: str) -> InputError:
        return InputError([Problem("--tls-dir", message)])

    if folder.exists() and not folder.is_dir():
        raise refuse(f"{folder} is a file; give a folder (made if missing)")
    present = [name for name in FILES if (folder / name).is_file()]
    made = not present
    if made:
        try:
            RunTLS.create(folder, run_id)
        except OSError as e:
            raise refuse(
                f"cannot write into {folder} ({e.strerror}); give a folder you can write to"
            ) from None
    elif len(present) < len(FILES):
        missing = ", ".join(n for n in FILES if n not in present)
        raise refuse(
            f"{folder} lacks {missing}; give a folder with all of {', '.join(FILES)}, "
            "or a new one to make them in"
        )
    files = {name: (folder / name).read_bytes() for name in FILES}
    if not made:
        _check_not_expired(folder, files)
    return files, made


def _check_not_expired(folder: Path, files: dict[str, bytes]) -> None:
    import datetime

    from cryptography import x509

    from daskstep.errors import InputError, Problem

    now = datetime.datetime.now(datetime.timezone.utc)
    for name in ("ca.pem", "client.pem", "cluster.pem"):
        try:
            cert = x509.load_pem_x509_certificate(files[name])
        except ValueError:
            message = f"{folder}/{name} is not a PEM certificate; give the folder render made"
            raise InputError([Problem("--tls-dir", message)]) from None
        ends = getattr(cert, "not_valid_after_utc", None)  # cryptography >= 42
        ends = ends or cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)
        if ends <= now:
            message = (
                f"{folder}/{name} expired on {ends:%Y-%m-%d}; empty the "
                "folder to make new ones, and create the Secret again"
            )
            raise InputError([Problem("--tls-dir", message)])


def mounted(objects: list[dict[str, Any]], options: KubeOptions) -> bool:
    """Whether the run's pods mount its TLS Secret: a cluster with TLS."""
    return options.tls and any(o.get("kind") == "DaskCluster" for o in objects)


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
