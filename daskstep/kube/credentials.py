"""The renewing credential sidecars as containers, for worker pods and step pods alike.

They read REANA's per-user Secret (CERN_USER, CERN_KEYTAB and the keytab; VONAME,
usercert.pem, userkey.pem, VOMSPROXY_PASS), mounted read-only where REANA mounts it, or as
single variables by reference: no secret value is ever written into an object. What they keep
valid goes into an in-memory emptyDir that the Dask containers mount read-only.
"""

from __future__ import annotations

from typing import Any

from daskstep.kube.objects import CREDENTIALS, SECRETS, KubeOptions

KRB5_CACHE = f"{CREDENTIALS}/krb5cc"
PROXY = f"{CREDENTIALS}/x509up"


def _secret_env(options: KubeOptions, *keys: str) -> list[dict[str, Any]]:
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": options.secrets_name, "key": key}}}
        for key in keys
    ]


def _ready_probe(ready_file: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": ["test", "-f", ready_file]},
        "periodSeconds": period,
        "failureThreshold": failures,
    }


def _sidecar(name: str, options: KubeOptions, argv: list[str], env: list, ready: str) -> dict:
    return {
        "name": name,
        "image": options.daskstep_image,
        "command": ["daskstep", "sidecar", name, *argv, "--ready-file", ready],
        "env": env,
        "volumeMounts": [
            {"name": "secrets", "mountPath": SECRETS, "readOnly": True},
            {"name": "credentials", "mountPath": CREDENTIALS},
        ],
        # the Dask container may start at once; the pod is Ready once the credential is
        "startupProbe": _ready_probe(ready, 1, 300),
        "readinessProbe": _ready_probe(ready, 10, 3),
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": {"allowPrivilegeEscalation": False},
    }


def credential_sidecars(kerberos: bool, voms_proxy: bool, options: KubeOptions) -> list[dict]:
    sidecars = []
    if kerberos:
        argv = ["--keytab", f"{SECRETS}/$(CERN_KEYTAB)", "--principal", "$(CERN_USER)"]
        argv += ["--ccache", KRB5_CACHE]
        env = _secret_env(options, "CERN_USER", "CERN_KEYTAB")
        sidecars.append(_sidecar("kerberos", options, argv, env, f"{CREDENTIALS}/.kerberos.ready"))
    if voms_proxy:
        argv = ["--cert", f"{SECRETS}/usercert.pem", "--key", f"{SECRETS}/userkey.pem"]
        # a Secret volume's files are not the user's own 0600 files, which grid tools want
        argv += ["--private-key-copy", f"{CREDENTIALS}/.userkey.pem"]
        argv += ["--passphrase-base64-file", f"{SECRETS}/VOMSPROXY_PASS"]
        argv += ["--voms", "$(VONAME)", "--out", PROXY]
        env = _secret_env(options, "VONAME")
        sidecars.append(_sidecar("voms", options, argv, env, f"{CREDENTIALS}/.voms.ready"))
    return sidecars


def credential_environment(kerberos: bool, voms_proxy: bool) -> list[dict[str, str]]:
    env = []
    if kerberos:
        env.append({"name": "KRB5CCNAME", "value": f"FILE:{KRB5_CACHE}"})
    if voms_proxy:
        env.append({"name": "X509_USER_PROXY", "value": PROXY})
    return env


def credential_volumes(options: KubeOptions) -> list[dict[str, Any]]:
    return [
        {"name": "secrets", "secret": {"secretName": options.secrets_name, "defaultMode": 0o400}},
        {"name": "credentials", "emptyDir": {"medium": "Memory", "sizeLimit": "16Mi"}},
    ]


CREDENTIALS_MOUNT = {"name": "credentials", "mountPath": CREDENTIALS, "readOnly": True}
