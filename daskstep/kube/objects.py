"""What every object of a run shares: its names, its labels and its owner.

One root object owns everything else of a run, so deleting it removes the run, whatever
happened to the controller (Kubernetes' garbage collector follows ownerReferences). The root is
a ConfigMap that also records what ran: the reana.yaml and daskstep's version.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

RUN_LABEL = "daskstep.io/run"
COMPONENT_LABEL = "daskstep.io/component"
STEP_LABEL = "daskstep.io/step"
DASK_CLUSTER_LABEL = "dask.org/cluster-name"  # set by the operator on its pods
DASK_COMPONENT_LABEL = "dask.org/component"
SCHEDULER_PORT = 8786
DASHBOARD_PORT = 8787
WORKER_DASHBOARD_PORT = 8788
HEALTH_PORT = 8080  # the entrypoint's /healthz and /readyz in the step container

# Where things are in every pod of a run; REANA mounts its secrets at the same place.
WORKSPACE = "/workspace"
SECRETS = "/etc/reana/secrets"
CREDENTIALS = "/daskstep/credentials"
ENTRYPOINT_DIR = "/daskstep/bin"
PYZ = f"{ENTRYPOINT_DIR}/entrypoint.pyz"

# Where daskstep's own image is published, tagged with daskstep's version: fully qualified, as
# a bare `daskstep:0.1.0` means docker.io/library/daskstep to containerd (no such image) and is
# refused by CRI-O's short-name policy; and not Docker Hub, whose anonymous pull limit a
# cluster's nodes share.
DASKSTEP_IMAGE = "ghcr.io/daskstep/daskstep"
INGRESS_NAMESPACE = "ingress-nginx"  # where ingress-nginx's controller runs by default
TLS_SECRET_MODES = ("external", "inline")


def daskstep_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("daskstep")
    except PackageNotFoundError:
        return "dev"


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def is_dns_label(text: str, limit: int = 63) -> bool:
    return len(text) <= limit and bool(_DNS_LABEL.match(text))


def dns_label(text: str, limit: int = 63) -> str:
    """A step name as a Kubernetes name part: lower case, [a-z0-9-], no dash at either end."""
    cleaned = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return cleaned[:limit].rstrip("-") or "step"


@dataclass(frozen=True)
class KubeOptions:
    """Where and how a run is placed: the platform's choices, never the reana.yaml's."""

    namespace: str = "default"
    run_id: str = "ds-run"
    daskstep_image: str = field(default_factory=lambda: f"{DASKSTEP_IMAGE}:{daskstep_version()}")
    secrets_name: str = "reana-secretsstore"  # REANA's per-user Secret of CERN_USER, VONAME…
    workspace_claim: str = "daskstep-workspace"  # a ReadWriteMany PersistentVolumeClaim
    workspace_subpath: str = ""  # the run's folder inside the claim; "" = the claim's root
    root_uid: str | None = None  # the root's uid, known once it exists; None: no ownerReferences
    dashboard_host: str | None = None  # an Ingress for the dashboard on this host
    dashboard_auth_secret: str = "daskstep-dashboard-auth"  # htpasswd Secret for basic auth
    ingress_namespace: str = INGRESS_NAMESPACE  # the only namespace let through to the dashboard
    scheduler_memory: str = "2Gi"
    scheduler_cpu: str = "1"
    extra_labels: dict[str, str] = field(default_factory=dict)
    tls: bool = True  # the run's own CA and certificates, as a Secret the root owns
    # inline: that Secret, keys and all, is one of the run's objects (daskstep run creates it
    # through the API); external: the objects only mount it, made beforehand (render's default,
    # so that no private key is in YAML that goes to git)
    tls_secret: str = "inline"
    # the operator's DaskAutoscaler, between 0 and number_of_workers (REANA's), with the
    # scheduler's HTTP API on, so that the operator retires workers instead of deleting pods
    adapt: bool = False

    @property
    def cluster_name(self) -> str:
        return self.run_id

    @property
    def scheduler_service(self) -> str:
        """The operator names the scheduler's Service after the cluster."""
        return f"{self.cluster_name}-scheduler"

    @property
    def scheduler_address(self) -> str:
        host = f"{self.scheduler_service}.{self.namespace}.svc.cluster.local"
        return f"{'tls' if self.tls else 'tcp'}://{host}:{SCHEDULER_PORT}"

    @property
    def root_name(self) -> str:
        return self.run_id

    @property
    def log_reader(self) -> str:
        """The ServiceAccount of the step pods: its log sidecar reads the run's pod logs."""
        return f"{self.run_id}-logs"


def labels(options: KubeOptions, component: str, **more: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "daskstep",
        "app.kubernetes.io/instance": options.run_id,
        "app.kubernetes.io/managed-by": "daskstep",
        RUN_LABEL: options.run_id,
        COMPONENT_LABEL: component,
        **options.extra_labels,
        **more,
    }


def metadata(options: KubeOptions, name: str, component: str, **more: str) -> dict[str, Any]:
    """Namespaced metadata, owned by the run's root when its uid is known."""
    meta: dict[str, Any] = {
        "name": name,
        "namespace": options.namespace,
        "labels": labels(options, component, **more),
    }
    if options.root_uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "name": options.root_name,
                "uid": options.root_uid,
                "blockOwnerDeletion": True,
            }
        ]
    return meta


def build_root(options: KubeOptions, reana_yaml: str) -> dict[str, Any]:
    """The run's root: it owns every other object, and keeps the reana.yaml that ran."""
    meta = metadata(options, options.root_name, "root")
    meta.pop("ownerReferences", None)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": meta,
        "data": {"reana.yaml": reana_yaml, "daskstep-version": daskstep_version()},
    }


def without_nones(value: Any) -> Any:
    """The operator's helpers leave `env: None` and such; a null is not a valid value there."""
    if isinstance(value, dict):
        return {k: without_nones(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nones(v) for v in value]
    return value
