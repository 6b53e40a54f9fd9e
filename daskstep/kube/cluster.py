"""The Dask cluster of a run as the dask-kubernetes operator's `DaskCluster`, and the objects
around it: the NetworkPolicy that fences the run in, the log reader's RBAC and the optional
dashboard Ingress. Pure functions of the workflow and the options: `daskstep render` prints
them and the tests validate them without a cluster.

The operator's CRD embeds a Kubernetes 1.21 pod schema with int-or-string fields typed as
strings and no `restartPolicy` on init containers; a structural schema prunes what it does not
know without a word. So: ports in probes are named, quantities are strings, and the workers'
credential sidecars are ordinary containers.
"""

from __future__ import annotations

from typing import Any

from daskstep.errors import DaskstepError
from daskstep.kube import tls
from daskstep.kube.credentials import (
    CREDENTIALS_MOUNT,
    credential_environment,
    credential_sidecars,
    credential_volumes,
)
from daskstep.kube.objects import (
    DASHBOARD_PORT,
    RUN_LABEL,
    SCHEDULER_PORT,
    WORKER_DASHBOARD_PORT,
    WORKSPACE,
    KubeOptions,
    labels,
    metadata,
    without_nones,
)
from daskstep.scaling import scheduler_routes
from daskstep.workflow.limits import format_memory
from daskstep.workflow.spec import Workflow

WORKER_DEATH_TIMEOUT = 60  # seconds a worker outlives an unreachable scheduler
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"  # set by Kubernetes on every namespace


def quantity(n_bytes: int) -> str:
    """A memory size as Kubernetes writes it ("2Gi"); always a string, as the CRD types it."""
    return format_memory(n_bytes)


def workspace_volume(options: KubeOptions) -> dict[str, Any]:
    claim = {"claimName": options.workspace_claim}
    return {"name": "workspace", "persistentVolumeClaim": claim}


def workspace_mount(options: KubeOptions) -> dict[str, Any]:
    mount = {"name": "workspace", "mountPath": WORKSPACE}
    if options.workspace_subpath:
        mount["subPath"] = options.workspace_subpath
    return mount


def build_daskcluster(workflow: Workflow, options: KubeOptions) -> dict[str, Any]:
    """With the operator's own helper, then what it leaves out: our command lines, probes,
    scheduler resources, the run's labels and owner, the workspace and the credentials."""
    try:
        from dask_kubernetes.operator import make_cluster_spec
    except ImportError:
        raise DaskstepError(
            "the kubernetes backend needs dask-kubernetes: pip install 'daskstep[kubernetes]'"
        ) from None

    dask = workflow.dask
    assert dask is not None, "only a workflow with resources.dask has a cluster"
    memory, cpu = quantity(dask.memory_bytes), str(dask.single_worker_threads)
    worker_command = ["dask", "worker", "--nthreads", cpu, "--memory-limit", str(dask.memory_bytes)]
    worker_command += ["--death-timeout", str(WORKER_DEATH_TIMEOUT)]
    if options.tls:
        worker_command += tls.cluster_args()
    cluster = make_cluster_spec(
        name=options.cluster_name,
        image=dask.image,
        n_workers=dask.number_of_workers,
        resources={
            "requests": {"memory": memory, "cpu": cpu},
            "limits": {"memory": memory, "cpu": cpu},
        },
        worker_command=" ".join(worker_command),
    )
    cluster["metadata"] = metadata(options, options.cluster_name, "cluster")
    spec = cluster["spec"]

    scheduler = spec["scheduler"]
    scheduler["metadata"] = {"labels": labels(options, "scheduler")}
    [container] = scheduler["spec"]["containers"]
    container["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]
    if options.tls:
        container["args"] += ["--protocol", "tls", *tls.cluster_args()]
        container["volumeMounts"] = [tls.MOUNT]
        scheduler["spec"]["volumes"] = [tls.tls_volume(options)]
    container["args"] += [
        "--port",
        str(SCHEDULER_PORT),
        "--dashboard-address",
        f":{DASHBOARD_PORT}",
    ]
    if options.adapt:
        container["env"] = [{"name": "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES",
                             "value": repr(scheduler_routes())}]  # fmt: skip
    limit = {"memory": options.scheduler_memory, "cpu": options.scheduler_cpu}
    container["resources"] = {"requests": dict(limit), "limits": {"memory": limit["memory"]}}
    scheduler["spec"]["enableServiceLinks"] = False

    worker = spec["worker"]
    worker["metadata"] = {"labels": labels(options, "worker")}
    pod = worker["spec"]
    [container] = pod["containers"]
    credentials = workflow.needs_kerberos, workflow.needs_voms_proxy
    container["env"] = credential_environment(*credentials)
    container["volumeMounts"] = [workspace_mount(options)]
    if options.tls:  # the operator's own default says tcp://
        container["env"].append(
            {"name": "DASK_SCHEDULER_ADDRESS", "value": options.scheduler_address}
        )
        container["volumeMounts"].append(tls.MOUNT)
    container["workingDir"] = WORKSPACE
    container["readinessProbe"] = {
        "httpGet": {"port": "http-dashboard", "path": "/health"},
        "periodSeconds": 2,
    }
    assert container["ports"][0]["containerPort"] == WORKER_DASHBOARD_PORT
    pod["volumes"] = [workspace_volume(options)]
    if options.tls:
        pod["volumes"].append(tls.tls_volume(options))
    pod["enableServiceLinks"] = False
    sidecars = credential_sidecars(*credentials, options)
    if sidecars:
        container["volumeMounts"].append(CREDENTIALS_MOUNT)
        pod["containers"] += sidecars
        pod["volumes"] += credential_volumes(options)
    return without_nones(cluster)


def build_autoscaler(workflow: Workflow, options: KubeOptions) -> dict[str, Any]:
    """REANA's DaskAutoscaler: none while nothing waits, up to number_of_workers."""
    assert workflow.dask is not None
    return {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskAutoscaler",
        "metadata": metadata(options, options.cluster_name, "autoscaler"),
        "spec": {
            "cluster": options.cluster_name,
            "minimum": 0,
            "maximum": workflow.dask.number_of_workers,
        },
    }


def build_network_policy(options: KubeOptions) -> dict[str, Any]:
    """Only the run's own pods reach its scheduler, workers and steps: anything else in the
    cluster could otherwise submit code to workers that hold the user's credentials."""
    run = {"matchLabels": {RUN_LABEL: options.run_id}}
    ingress: list[dict[str, Any]] = [{"from": [{"podSelector": run}]}]
    if options.dashboard_host:  # the ingress controller, and only it: the basic auth is there
        controller = {"matchLabels": {NAMESPACE_NAME_LABEL: options.ingress_namespace}}
        ingress.append(
            {
                "from": [{"namespaceSelector": controller}],
                "ports": [{"protocol": "TCP", "port": DASHBOARD_PORT}],
            }
        )
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(options, f"{options.run_id}-fence", "network-policy"),
        "spec": {"podSelector": run, "policyTypes": ["Ingress"], "ingress": ingress},
    }


def build_log_reader(options: KubeOptions) -> list[dict[str, Any]]:
    """The step pods' log sidecar follows the run's pods through the API: it may list them
    and read their logs, in this namespace, and nothing else."""
    name = options.log_reader
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": metadata(options, name, "log-reader"),
            "automountServiceAccountToken": True,
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": metadata(options, name, "log-reader"),
            "rules": [
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": metadata(options, name, "log-reader"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": name, "namespace": options.namespace}],
        },
    ]


def build_dashboard(options: KubeOptions) -> dict[str, Any]:
    """The scheduler's dashboard behind the ingress controller's basic auth (ingress-nginx's
    annotations): an open dashboard lets anyone watch, and its /eval-like endpoints act."""
    meta = metadata(options, f"{options.run_id}-dashboard", "dashboard")
    meta["annotations"] = {
        "nginx.ingress.kubernetes.io/auth-type": "basic",
        "nginx.ingress.kubernetes.io/auth-secret": options.dashboard_auth_secret,
        "nginx.ingress.kubernetes.io/auth-realm": f"daskstep run {options.run_id}",
    }
    backend = {"service": {"name": options.scheduler_service, "port": {"number": DASHBOARD_PORT}}}
    path = {"path": "/", "pathType": "Prefix", "backend": backend}
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {"rules": [{"host": options.dashboard_host, "http": {"paths": [path]}}]},
    }
