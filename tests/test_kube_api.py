"""The thin Kubernetes layer through the official client, unmocked, against a local HTTP
stand-in that stores objects as an API server does (no API server can run here); and the
words for why a pod is not ready, from pod statuses as the API server writes them."""

from __future__ import annotations

import json
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from kubernetes import client as k8s
from test_kube_render import SPECS

from daskstep.kube.api import KubernetesAPI
from daskstep.kube.objects import KubeOptions
from daskstep.kube.pending import why_not_ready
from daskstep.kube.render import render


class StandIn(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.objects: dict[str, dict[str, Any]] = {}  # path of the object -> object
        self.requests: list[tuple[str, str, Any]] = []
        self.authorizations: list[str | None] = []


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandIn

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length)) if length else None

    def _missing(self, path: str) -> None:
        status = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404}
        self._send(404, {**status, "reason": "NotFound", "message": f"{path} not found"})

    def do_POST(self) -> None:
        body = self._body()
        self.server.requests.append(("POST", self.path, json.loads(json.dumps(body))))
        body["metadata"]["uid"] = str(uuid.uuid4())
        self.server.objects[f"{self.path}/{body['metadata']['name']}"] = body
        self._send(201, body)

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = parse_qs(url.query)
        self.server.requests.append(("GET", url.path, query))
        self.server.authorizations.append(self.headers.get("Authorization"))
        if url.path in self.server.objects:
            self._send(200, self.server.objects[url.path])
            return
        wanted = dict(
            part.split("=", 1) for part in query.get("labelSelector", [""])[0].split(",") if part
        )
        items = [
            o
            for path, o in self.server.objects.items()
            if path.rsplit("/", 1)[0] == url.path
            and all(o["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items())
        ]
        if not items and not url.path.endswith("s"):
            self._missing(url.path)
            return
        self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items})

    def do_DELETE(self) -> None:
        body = self._body()
        self.server.requests.append(("DELETE", self.path, body))
        if self.server.objects.pop(self.path, None) is None:
            self._missing(self.path)
            return
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


@pytest.fixture
def stand_in():
    server = StandIn()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def api(stand_in):
    config = k8s.Configuration()
    config.host = f"http://127.0.0.1:{stand_in.server_port}"
    with k8s.ApiClient(config) as api_client:
        yield KubernetesAPI(api_client)


def test_every_rendered_object_goes_to_its_own_path_and_comes_back(stand_in, api) -> None:
    options = KubeOptions(namespace="ns", run_id="ds-1", root_uid="u-root", adapt=True)
    objects = render(SPECS["both"], "x: 1\n", options)
    made = [api.create(obj) for obj in objects]
    paths = [path for method, path, _ in stand_in.requests if method == "POST"]
    assert paths == [
        "/api/v1/namespaces/ns/configmaps",
        "/api/v1/namespaces/ns/serviceaccounts",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/roles",
        "/apis/rbac.authorization.k8s.io/v1/namespaces/ns/rolebindings",
        "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies",
        "/api/v1/namespaces/ns/secrets",
        "/apis/kubernetes.dask.org/v1/namespaces/ns/daskclusters",
        "/apis/kubernetes.dask.org/v1/namespaces/ns/daskautoscalers",
        "/apis/batch/v1/namespaces/ns/jobs",
        "/apis/batch/v1/namespaces/ns/jobs",
    ]
    # what the server received is what we rendered: the typed client lost no field
    for (_, _, sent), obj in zip(
        [r for r in stand_in.requests if r[0] == "POST"], objects, strict=True
    ):
        assert sent == json.loads(json.dumps(obj))
    assert all(m["metadata"]["uid"] for m in made)
    root = api.get("ConfigMap", "ns", "ds-1")
    assert root is not None and root["data"]["reana.yaml"] == "x: 1\n"
    cluster = api.get("DaskCluster", "ns", "ds-1")
    assert cluster is not None and cluster["spec"]["worker"]["replicas"] == 3
    autoscaler = api.get("DaskAutoscaler", "ns", "ds-1")
    assert autoscaler is not None and autoscaler["spec"]["maximum"] == 3
    jobs = api.list("Job", "ns", labels="daskstep.io/run=ds-1,daskstep.io/step=fit-plot")
    assert [j["metadata"]["name"] for j in jobs] == ["ds-1-1-fit-plot"]


def test_get_of_nothing_is_none_and_delete_is_foreground_and_idempotent(stand_in, api) -> None:
    assert api.get("ConfigMap", "ns", "nope") is None
    assert api.get("DaskCluster", "ns", "nope") is None
    api.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "r", "namespace": "ns"}}
    )
    api.delete("ConfigMap", "ns", "r")
    api.delete("ConfigMap", "ns", "r")  # already gone: no error
    api.delete("Job", "ns", "gone")
    deletes = [r for r in stand_in.requests if r[0] == "DELETE"]
    assert [path for _, path, _ in deletes] == [
        "/api/v1/namespaces/ns/configmaps/r",
        "/api/v1/namespaces/ns/configmaps/r",
        "/apis/batch/v1/namespaces/ns/jobs/gone",
    ]
    assert all(body["propagationPolicy"] == "Foreground" for _, _, body in deletes)


def _pod(status: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "ds-1-default-worker-abc"}, "status": status}


def _waiting(reason: str, message: str = "", restarts: int = 0) -> dict[str, Any]:
    return {
        "containerStatuses": [
            {
                "name": "worker",
                "image": "ghcr.io/dask/dask:9999",
                "ready": False,
                "restartCount": restarts,
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ]
    }


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (
            _waiting("ImagePullBackOff", 'Back-off pulling image "ghcr.io/dask/dask:9999"'),
            "container worker cannot pull image ghcr.io/dask/dask:9999 (ImagePullBackOff)",
        ),
        (
            {"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False",
             "reason": "Unschedulable",
             "message": "0/3 nodes are available: 3 Insufficient memory."}]},
            "unschedulable: 0/3 nodes are available: 3 Insufficient memory.",
        ),
        (_waiting("CrashLoopBackOff", "back-off 40s", restarts=4), "keeps crashing (4 restarts)"),
        (
            _waiting("CreateContainerConfigError", 'secret "reana-secretsstore" not found'),
            'a missing Secret or ConfigMap?) (CreateContainerConfigError): secret "reana-',
        ),
        (
            {"phase": "Running", "containerStatuses": [{"name": "kerberos", "ready": False,
             "state": {"running": {}}}]},
            "container kerberos is running but not ready",
        ),
    ],
)  # fmt: skip
def test_why_a_pod_is_not_ready(status: dict[str, Any], says: str) -> None:
    line = why_not_ready(_pod(status))
    assert line is not None and line.startswith("pod ds-1-default-worker-abc: ")
    assert says in line and "\n" not in line


def test_a_ready_pod_has_no_reason_and_events_fill_in() -> None:
    ready = {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}
    assert why_not_ready(_pod(ready)) is None
    event = {"type": "Warning", "reason": "FailedMount", "message": "MountVolume.SetUp failed"}
    line = why_not_ready(_pod({"phase": "Pending"}), [event])
    assert line == "pod ds-1-default-worker-abc: FailedMount: MountVolume.SetUp failed"


def write_kubeconfig(path: Path, port: int, token: str) -> Path:
    """A kubeconfig whose one context is the stand-in on loopback, with a bearer token."""
    server = {"server": f"http://127.0.0.1:{port}"}
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": server}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    return path


@pytest.fixture
def default_configuration():
    """Loading a configuration sets the client's process-wide default: put it back."""
    saved = k8s.Configuration.get_default_copy()
    yield
    k8s.Configuration.set_default(saved)


def test_a_kubeconfig_is_used_when_not_in_a_pod(
    stand_in, tmp_path, monkeypatch, default_configuration
) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "config", stand_in.server_port, "kubeconfig-token")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    assert KubernetesAPI().get("ConfigMap", "ns", "nothing") is None
    assert [a.lower() for a in stand_in.authorizations] == ["bearer kubeconfig-token"]


def test_in_a_pod_the_service_account_is_used_over_tls(
    stand_in, tmp_path, monkeypatch, default_configuration
) -> None:
    """As a pod sees it: the API server's address in the environment, its CA and a token in
    the service account folder; TLS is verified against that CA."""
    import ssl
    import subprocess

    import kubernetes.config.incluster_config as incluster

    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    stand_in.socket = context.wrap_socket(stand_in.socket, server_side=True)
    token = tmp_path / "token"
    token.write_text("service-account-token")
    monkeypatch.setattr(incluster, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster, "SERVICE_CERT_FILENAME", str(cert))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(stand_in.server_port))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-such-config"))
    assert KubernetesAPI().list("Pod", "ns", labels="daskstep.io/run=ds-1") == []
    assert [a.lower() for a in stand_in.authorizations] == ["bearer service-account-token"]
