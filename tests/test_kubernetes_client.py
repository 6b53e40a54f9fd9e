"""The real `KubernetesPodLogClient` (the official client, unmocked) against a fake API server.

No API server can run here, so a stdlib HTTP server answers the two requests the client makes,
as the API server does: a PodList as JSON, and a pod log as a chunked stream that stays open
while the container runs. This checks the query the client sends (sinceSeconds, timestamps,
follow, previous) and that chunks reach the caller as they come, not when the response ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest
from conftest import daskstep, wait_for
from kubernetes import client as k8s

from sidecar.kubernetes import KubernetesPodLogClient, KubernetesSource
from sidecar.store import LogStore, read_lines

POD = {
    "metadata": {
        "name": "c1-default-worker-1",
        "uid": "u-1",
        "labels": {"dask.org/cluster-name": "c1", "dask.org/component": "worker"},
        "creationTimestamp": "2026-11-27T11:48:01Z",
    },
    "spec": {"containers": [{"name": "worker", "image": "dask"}, {"name": "sidecar"}]},
    "status": {
        "phase": "Running",
        "containerStatuses": [
            {"name": "worker", "image": "dask", "imageID": "", "ready": True, "restartCount": 2}
        ],
    },
}


class FakeAPIServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.release = threading.Event()  # lets the log response send its second chunk and end
        self.log_chunks = [b"2026-11-27T11:48:01.5Z first\n", b"2026-11-27T11:48:02Z second\n"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FakeAPIServer

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        self.server.requests.append((url.path, parse_qs(url.query)))
        if url.path == "/api/v1/namespaces/ns/pods":
            body = json.dumps({"kind": "PodList", "apiVersion": "v1", "items": [POD]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        first, second = self.server.log_chunks
        self._chunk(first)
        self.server.release.wait(10)
        self._chunk(second)
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()


@pytest.fixture
def server():
    s = FakeAPIServer()
    thread = threading.Thread(target=s.serve_forever, daemon=True)
    thread.start()
    yield s
    s.release.set()
    s.shutdown()
    s.server_close()


@pytest.fixture
def api(server):
    config = k8s.Configuration()
    config.host = f"http://127.0.0.1:{server.server_port}"
    with k8s.ApiClient(config) as api_client:
        yield k8s.CoreV1Api(api_client)


def test_list_pods_reads_names_labels_containers_phase_and_restarts(server, api):
    pods = KubernetesPodLogClient(api).list_pods("ns", "dask.org/cluster-name=c1")
    assert len(pods) == 1
    pod = pods[0]
    assert (pod.name, pod.uid, pod.phase) == ("c1-default-worker-1", "u-1", "Running")
    assert pod.labels == POD["metadata"]["labels"]
    assert pod.containers == ("worker", "sidecar")
    assert pod.restarts == {"worker": 2}
    assert pod.created_ns == 1795780081 * 10**9
    assert server.requests == [
        ("/api/v1/namespaces/ns/pods", {"labelSelector": ["dask.org/cluster-name=c1"]})
    ]


def test_read_log_streams_chunks_as_they_come_and_asks_from_far_enough_back(server, api):
    since = time.time_ns() - 90 * 10**9 - 1
    response = KubernetesPodLogClient(api, clock_skew_s=30).read_log(
        "ns", "w1", "worker", since_ns=since, follow=True
    )
    chunks = iter(response)
    assert next(chunks) == server.log_chunks[0]  # before the server has sent the rest
    server.release.set()
    assert b"".join(chunks) == server.log_chunks[1]
    response.close()
    path, query = server.requests[0]
    assert path == "/api/v1/namespaces/ns/pods/w1/log"
    seconds = int(query.pop("sinceSeconds")[0])
    assert 121 <= seconds <= 123  # 91 s back, rounded up, plus the 30 s margin for clock skew
    assert query == {"container": ["worker"], "follow": ["true"], "timestamps": ["true"]}


def test_the_source_stores_through_the_real_client(server, api, tmp_path):
    server.release.set()
    store = LogStore(tmp_path / "logs")
    source = KubernetesSource(
        KubernetesPodLogClient(api), "ns", ["dask.org/cluster-name=c1"], relist_interval=60
    )
    source.restore(None, store)
    path = store.path("worker", "c1-default-worker-1")
    deadline = time.monotonic() + 10
    while len(list(read_lines(path))) < 2:
        source.poll(store)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for _ in range(20):  # it reconnects when a response ends: nothing may come twice
        source.poll(store)
        time.sleep(0.01)
    source.close()
    assert [x.data for x in read_lines(path)] == [b"first\n", b"second\n"]
    # restartCount 2: the previous instance was asked for first, then the current one, followed
    logs = [q for p, q in server.requests if p.endswith("/log")]
    assert [(q.get("previous"), q["follow"]) for q in logs[:2]] == [
        (["true"], ["false"]),
        (None, ["true"]),
    ]
    store.close()


def test_the_sidecar_command_ships_pods_named_by_a_selector(server, tmp_path):
    """`--source kubernetes:NAMESPACE/SELECTOR`, connected through a kubeconfig file."""
    server.release.set()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}
                ],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_")}
    env["KUBECONFIG"] = str(kubeconfig)
    source = "kubernetes:ns/dask.org/cluster-name=c1"
    proc = daskstep("sidecar", "logs", "--workspace", str(tmp_path), "--source", source, env=env)
    path = tmp_path / ".daskstep" / "logs" / "workers" / "c1-default-worker-1.log"
    try:
        wait_for(lambda: path.exists() and path.read_bytes() == b"first\nsecond\n", 30, "logs")
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert path.read_bytes() == b"first\nsecond\n"
    assert ("/api/v1/namespaces/ns/pods", {"labelSelector": ["dask.org/cluster-name=c1"]}) in (
        server.requests
    )


def test_the_sidecar_command_says_in_one_line_when_docker_cannot_be_reached(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once we leave: nobody listens there
    env = {**os.environ, "DOCKER_HOST": f"tcp://127.0.0.1:{port}"}
    proc = daskstep(
        "sidecar",
        "logs",
        "--workspace",
        str(tmp_path),
        "--source",
        "docker:daskstep.run=r1",
        env=env,
    )
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 69, err
    assert err.startswith("error: --source: cannot connect") and err.count("\n") == 1, err
