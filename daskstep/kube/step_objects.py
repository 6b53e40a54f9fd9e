"""One step as a Kubernetes Job whose pod we write ourselves, so it can have what a
DaskCluster's pods cannot: native sidecars (init containers with `restartPolicy: Always`,
Kubernetes 1.29+), which start before the step and stop after it.

- An init container copies the entrypoint zipapp from the daskstep image into an emptyDir, as
  Tekton's init container copies its entrypoint binary.
- The log sidecar follows the run's pods into the workspace's log store; the credential
  sidecars keep the ticket and the proxy valid, and the step starts once they are.
- The step container is the step's own `environment` image running the zipapp with its
  Python: it waits for the scheduler, exports DASK_SCHEDULER_URI, forwards signals and writes
  its status and termination message.
- The entrypoint's own exit codes (69 scheduler unreachable, 75 too few workers, 78 version
  mismatch) fail the Job at once; an evicted pod is not the step's failure.
"""

from __future__ import annotations

from typing import Any

from daskstep.kube import tls
from daskstep.kube.cluster import workspace_mount, workspace_volume
from daskstep.kube.credentials import (
    CREDENTIALS_MOUNT,
    KRB5_CACHE,
    PROXY,
    credential_environment,
    credential_sidecars,
    credential_volumes,
)
from daskstep.kube.objects import (
    ENTRYPOINT_DIR,
    HEALTH_PORT,
    PYZ,
    RUN_LABEL,
    STEP_LABEL,
    WORKSPACE,
    KubeOptions,
    dns_label,
    labels,
    metadata,
)
from daskstep.record import STATE
from daskstep.seams import STEP_GRACE_SECONDS
from daskstep.workflow.spec import Step, Workflow

TERMINATION_LOG = "/dev/termination-log"
NOT_RETRIED = (69, 75, 78)  # the entrypoint's: scheduler unreachable, too few workers, versions
DEFAULT_STEP_IMAGE = "docker.io/library/python:3.12-slim"  # a step without `environment`


def step_job_name(options: KubeOptions, index: int, step: Step) -> str:
    prefix = f"{options.run_id}-{index + 1}-"
    return prefix + dns_label(step.name, 63 - len(prefix))


def status_path(options: KubeOptions, workflow: Workflow, index: int) -> str:
    """Where step `index` writes its status in the workspace claim: under the run's id, so a
    reused workspace cannot show an earlier run's status."""
    name = dns_label(workflow.steps[index].name)
    return f"{WORKSPACE}/{STATE}/runs/{options.run_id}/steps/{index + 1:02d}-{name}.json"


def _entrypoint_argv(workflow: Workflow, index: int, step: Step, options: KubeOptions) -> list:
    status = status_path(options, workflow, index)
    argv = ["python3", PYZ, "--status-file", status, "--termination-log", TERMINATION_LOG]
    argv += ["--grace-period", f"{STEP_GRACE_SECONDS:g}", "--health-port", str(HEALTH_PORT)]
    argv += ["--workdir", WORKSPACE]
    if workflow.dask is not None:
        argv += ["--scheduler", options.scheduler_address]
        if options.tls:
            argv += ["--tls-dir", tls.TLS_DIR]
        argv += ["--wait-workers", str(workflow.dask.number_of_workers)]
    if step.kerberos or workflow.needs_kerberos:
        argv += ["--wait-file", KRB5_CACHE]
    if step.voms_proxy or workflow.needs_voms_proxy:
        argv += ["--wait-file", PROXY]
    for command in step.commands:
        argv += ["--shell", command]
    return argv


def _log_sidecar(options: KubeOptions) -> dict[str, Any]:
    source = f"kubernetes:{options.namespace}/{RUN_LABEL}={options.run_id}"
    return {
        "name": "logs",
        "image": options.daskstep_image,
        "command": ["daskstep", "sidecar", "logs", "--workspace", WORKSPACE, "--source", source],
        "restartPolicy": "Always",
        "volumeMounts": [workspace_mount(options)],
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def build_step_job(
    workflow: Workflow, index: int, options: KubeOptions, default_image: str = DEFAULT_STEP_IMAGE
) -> dict[str, Any]:
    step = workflow.steps[index]
    credentials = (
        step.kerberos or workflow.needs_kerberos,
        step.voms_proxy or workflow.needs_voms_proxy,
    )
    step_labels = {STEP_LABEL: dns_label(step.name)}
    binary = {"name": "daskstep-bin", "emptyDir": {"sizeLimit": "64Mi"}}
    install = {
        "name": "entrypoint",
        "image": options.daskstep_image,
        "command": ["daskstep", "entrypoint", "install", "/install"],
        "volumeMounts": [{"name": "daskstep-bin", "mountPath": "/install"}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    gate = []
    if index > 0:  # the Jobs of a serial workflow may all be applied at once (GitOps)
        gate.append(
            {
                "name": "after-previous-step",
                "image": options.daskstep_image,
                "command": ["daskstep", "wait-step", status_path(options, workflow, index - 1)],
                "volumeMounts": [workspace_mount(options)],
                "securityContext": {"allowPrivilegeEscalation": False},
            }
        )
    sidecars = [_log_sidecar(options)]
    for sidecar in credential_sidecars(*credentials, options):
        sidecars.append({**sidecar, "restartPolicy": "Always"})
    mounts = [
        workspace_mount(options),
        {"name": "daskstep-bin", "mountPath": ENTRYPOINT_DIR, "readOnly": True},
    ]
    volumes = [workspace_volume(options), binary]
    if len(sidecars) > 1:
        mounts.append(CREDENTIALS_MOUNT)
        volumes += credential_volumes(options)
    if options.tls and workflow.dask is not None:
        mounts.append(tls.MOUNT)
        volumes.append(tls.tls_volume(options))
    health = {"httpGet": {"port": "health", "path": "/healthz"}, "periodSeconds": 10}
    main = {
        "name": "step",
        "image": step.environment or default_image,
        "command": _entrypoint_argv(workflow, index, step, options),
        "workingDir": WORKSPACE,
        "env": credential_environment(*credentials),
        "ports": [{"name": "health", "containerPort": HEALTH_PORT, "protocol": "TCP"}],
        "livenessProbe": {**health, "failureThreshold": 6},
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    if workflow.dask is not None:
        # the step pod's share: its own commands, not the cluster's work
        main["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    pod = {
        "metadata": {"labels": labels(options, "step", **step_labels)},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": options.log_reader,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": int(STEP_GRACE_SECONDS) + 5,
            "initContainers": [install, *gate, *sidecars],
            "containers": [main],
            "volumes": volumes,
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(options, step_job_name(options, index, step), "step", **step_labels),
        "spec": {
            "backoffLimit": 0,
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailJob",
                        "onExitCodes": {
                            "containerName": "step",
                            "operator": "In",
                            "values": list(NOT_RETRIED),
                        },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}],
                    },
                ]
            },
            "template": pod,
        },
    }
