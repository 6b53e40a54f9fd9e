"""`daskstep render`: every object of a run, in the order they are applied."""

from __future__ import annotations

from typing import Any

import yaml

from daskstep.kube import tls
from daskstep.kube.cluster import (
    build_autoscaler,
    build_dashboard,
    build_daskcluster,
    build_log_reader,
    build_network_policy,
)
from daskstep.kube.objects import KubeOptions, build_root
from daskstep.kube.step_objects import build_step_job
from daskstep.workflow.spec import Workflow

HEADER = """\
# daskstep run {run} in namespace {namespace}: apply in this order. Each step Job after the
# first waits (daskstep wait-step) until the previous step succeeded, so all may be applied
# at once; daskstep run --backend kubernetes creates them one after another.
"""

NO_OWNER = """\
# No ownerReferences: they need the root's uid. Apply the root ConfigMap first, then render
# again with --run-id {run} --root-uid "$UID", where
#   UID=$(kubectl get configmap -n {namespace} {root} -o jsonpath='{{.metadata.uid}}')
# so that deleting the root deletes the whole run.
"""


def cluster_objects(
    workflow: Workflow, options: KubeOptions, tls_files: dict[str, bytes] | None = None
) -> list[dict[str, Any]]:
    """What the run needs besides its root and its step Jobs, in the order they are created.
    `tls_files`: the run's CA and certificates for an inline Secret; without them, new ones
    are made. An external Secret is only mounted, never made here."""
    objects = [*build_log_reader(options), build_network_policy(options)]
    if workflow.dask is not None:
        if options.tls and options.tls_secret == "inline":
            files = tls_files or tls.make_files(options.run_id)
            objects.append(tls.build_tls_secret(options, files))
        objects.append(build_daskcluster(workflow, options))
        if options.adapt:
            objects.append(build_autoscaler(workflow, options))
        if options.dashboard_host:
            objects.append(build_dashboard(options))
    return objects


def render(
    workflow: Workflow,
    reana_yaml: str,
    options: KubeOptions,
    tls_files: dict[str, bytes] | None = None,
) -> list[dict[str, Any]]:
    steps = [build_step_job(workflow, i, options) for i in range(len(workflow.steps))]
    cluster = cluster_objects(workflow, options, tls_files)
    return [build_root(options, reana_yaml), *cluster, *steps]


class _Dumper(yaml.SafeDumper):
    """No &anchors and *aliases: a shared dict is written out each time, as kubectl would."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


TLS_NOTE = """\
# The Secret {secret} holds this run's own CA certificate and its private keys (made for this
# run only, valid 30 days): treat this output as a secret, e.g. do not commit it. --tls off
# leaves it out, and the scheduler then takes anyone who reaches it.
"""


EXTERNAL_TLS_NOTE = """\
# The pods mount the Secret {secret}, the run's CA, certificates and keys,
# which this output leaves out: create it before applying, from the folder that
# daskstep render --tls-dir DIR makes (or through your secret store):
#   kubectl create secret generic {secret} -n {namespace} --from-file=DIR
# The root does not own it: delete it with the run.
"""


def dump(objects: list[dict[str, Any]], options: KubeOptions) -> str:
    text = HEADER.format(run=options.run_id, namespace=options.namespace)
    if any(o.get("kind") == "Secret" for o in objects):
        text += TLS_NOTE.format(secret=tls.secret_name(options))
    elif tls.mounted(objects, options):
        text += EXTERNAL_TLS_NOTE.format(
            secret=tls.secret_name(options), namespace=options.namespace
        )
    if not options.root_uid:
        text += NO_OWNER.format(
            run=options.run_id, namespace=options.namespace, root=options.root_name
        )
    return text + yaml.dump_all(objects, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
