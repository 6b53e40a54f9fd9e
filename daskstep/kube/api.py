"""The one thin layer between daskstep and a Kubernetes API server: create, get, list and
delete objects as plain dicts. Everything above it (the run loop, the readiness wait, the
step Jobs) is tested against a fake of this Protocol; the real class below is tested through
the official client against a local HTTP stand-in, so serialisation is real code.
"""

from __future__ import annotations

import os
from typing import Any, Protocol

from daskstep.errors import InputError, Problem

# kind -> (API group/version, plural): the kinds a run creates or reads
KINDS: dict[str, tuple[str, str]] = {
    "ConfigMap": ("v1", "configmaps"),
    "Secret": ("v1", "secrets"),  # the run's TLS
    "ServiceAccount": ("v1", "serviceaccounts"),
    "Pod": ("v1", "pods"),
    "Event": ("v1", "events"),
    "Role": ("rbac.authorization.k8s.io/v1", "roles"),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", "rolebindings"),
    "NetworkPolicy": ("networking.k8s.io/v1", "networkpolicies"),
    "Ingress": ("networking.k8s.io/v1", "ingresses"),
    "Job": ("batch/v1", "jobs"),
    "DaskCluster": ("kubernetes.dask.org/v1", "daskclusters"),
    "DaskAutoscaler": ("kubernetes.dask.org/v1", "daskautoscalers"),  # --adapt
}


class KubeAPI(Protocol):
    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the server stored it (with its uid)."""

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """None when there is no such object."""

    def list(
        self, kind: str, namespace: str, labels: str = "", fields: str = ""
    ) -> list[dict[str, Any]]: ...

    def delete(self, kind: str, namespace: str, name: str) -> None:
        """Foreground: the object goes once its dependents have; no error if it is gone."""


class KubernetesAPI:
    """Through the official client: kubeconfig, or the pod's own service account."""

    def __init__(self, api_client: Any = None) -> None:
        from kubernetes import client, config

        if api_client is None:
            try:
                config.load_incluster_config()
            except config.ConfigException:
                try:
                    # read now: the client reads $KUBECONFIG once, when it is imported
                    config.load_kube_config(config_file=os.environ.get("KUBECONFIG") or None)
                except (config.ConfigException, OSError) as e:
                    raise InputError(
                        [
                            Problem(
                                "KUBECONFIG",
                                f"no usable Kubernetes configuration ({e}); "
                                "point KUBECONFIG at one, or run daskstep in a pod",
                            )
                        ]
                    ) from None
            api_client = client.ApiClient()
        self.client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self._missing = client.exceptions.ApiException

    def _route(self, kind: str) -> tuple[str, str, str]:
        api_version, plural = KINDS[kind]
        group, _, version = api_version.rpartition("/")
        return group, version, plural

    def _plain(self, obj: Any) -> dict[str, Any]:
        return obj if isinstance(obj, dict) else self.client.sanitize_for_serialization(obj)

    def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        group, version, plural = self._route(obj["kind"])
        namespace = obj["metadata"]["namespace"]
        if not group:
            method = getattr(self.core, f"create_namespaced_{_snake(obj['kind'])}")
            return self._plain(method(namespace, obj))
        made = self.custom.create_namespaced_custom_object(group, version, namespace, plural, obj)
        return self._plain(made)

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        group, version, plural = self._route(kind)
        try:
            if not group:
                method = getattr(self.core, f"read_namespaced_{_snake(kind)}")
                return self._plain(method(name, namespace))
            found = self.custom.get_namespaced_custom_object(
                group, version, namespace, plural, name
            )
            return self._plain(found)
        except self._missing as e:
            if e.status == 404:
                return None
            raise

    def list(
        self, kind: str, namespace: str, labels: str = "", fields: str = ""
    ) -> list[dict[str, Any]]:
        group, version, plural = self._route(kind)
        options = {k: v for k, v in (("label_selector", labels), ("field_selector", fields)) if v}
        if not group:
            method = getattr(self.core, f"list_namespaced_{_snake(kind)}")
            found = self._plain(method(namespace, **options))
        else:
            found = self.custom.list_namespaced_custom_object(
                group, version, namespace, plural, **options
            )
        return list(found.get("items") or [])

    def delete(self, kind: str, namespace: str, name: str) -> None:
        from kubernetes.client import V1DeleteOptions

        group, version, plural = self._route(kind)
        body = V1DeleteOptions(propagation_policy="Foreground")
        try:
            if not group:
                method = getattr(self.core, f"delete_namespaced_{_snake(kind)}")
                method(name, namespace, body=body)
            else:
                self.custom.delete_namespaced_custom_object(
                    group, version, namespace, plural, name, body=body
                )
        except self._missing as e:
            if e.status != 404:
                raise


def _snake(kind: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in kind).lstrip("_")
