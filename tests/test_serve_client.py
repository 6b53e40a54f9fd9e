"""The real reana-client 0.95 (from the package index, in a virtual environment of its own,
cached under /var/tmp/daskstep-reana-client by version) against `daskstep serve` on loopback:
login through the device flow approved by the test, then run, follow, fetch, list and delete
Dask workflows as a REANA user would.

The client checks every response of its generated API against reana_server.json (bravado's
`validate_responses`, on by default); `check_responses.py`-like code below asks the same
operations again with that validation spelled out, so a change of bravado's default cannot
hide a wrong body.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import require
from kdc import Kdc
from test_run_credentials import krb5_xrootd  # noqa: F401 (the fixture)
from test_run_credentials import workflow as reader_workflow
from xrootd import EXPECTED_SUM, XRootD

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

REANA_CLIENT = "0.95.0a6"  # 0.9.x rejects resources.dask in its own schema check
CACHE = Path("/var/tmp/daskstep-reana-client")
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "dask-bag"
ENDED = ("finished", "failed", "stopped", "deleted")

CHECK_RESPONSES = r"""
import json, sys
from bravado.client import SwaggerClient
from bravado.requests_client import RequestsClient
from reana_commons.api_client import BaseAPIClient
from reana_client.auth.oidc import get_access_token

url, ca, workflow = sys.argv[1:4]
spec = BaseAPIClient._get_spec(None, "reana_server.json")
http = RequestsClient(ssl_verify=ca)
client = SwaggerClient.from_spec(spec, http_client=http, config={
    "validate_responses": True, "validate_requests": True, "also_return_response": True})
client.swagger_spec.api_url = url
auth = {"headers": {"Authorization": "Bearer " + get_access_token()}}
api = client.api
calls = [
    (api.ping, {}), (api.get_you, {}), (api.info, {}), (api.get_secrets, {}),
    (api.get_workflows, {"type": "batch", "include_workspace_size": True}),
    (api.get_workflow_status, {"workflow_id_or_name": workflow}),
    (api.get_workflow_logs, {"workflow_id_or_name": workflow}),
    (api.get_files, {"workflow_id_or_name": workflow}),
    (api.get_workflow_specification, {"workflow_id_or_name": workflow}),
    (api.get_workflow_parameters, {"workflow_id_or_name": workflow}),
    (api.get_workflow_disk_usage, {"workflow_id_or_name": workflow}),
]
for operation, arguments in calls:
    operation(_request_options=auth, **arguments).result(timeout=60)
print(json.dumps({"validated": len(calls)}))
"""


@pytest.fixture(scope="module")
def reana_client() -> Path:
    """reana-client's own virtual environment, made once per version (a minute, from the index)."""
    home = CACHE / REANA_CLIENT
    binary = home / "bin" / "reana-client"
    if (home / ".complete").exists():
        return binary
    shutil.rmtree(home, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    venv.create(home, with_pip=True)
    install = subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "-q", "--pre",
         f"reana-client=={REANA_CLIENT}"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    tail = (install.stderr or install.stdout).strip().splitlines()[-1:] or [""]
    require(install.returncode == 0, f"reana-client {REANA_CLIENT} did not install: {tail[0]}")
    (home / ".complete").touch()
    return binary


class Server:
    """One `daskstep serve` on 127.0.0.1, a free port, and its workspaces."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, max_runs: int = 2) -> None:
        self.root, self.env, self.max_runs = root, env, max_runs
        self.process: subprocess.Popen[str] | None = None
        self.url = self.ca = self.said = ""

    def start(self) -> None:
        port = self.url.rpartition(":")[2] if self.url else "0"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "daskstep", "serve", "--workspaces", str(self.root),
             "--port", port, "--max-runs", str(self.max_runs)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
        )  # fmt: skip
        assert self.process.stdout is not None
        lines: list[str] = []
        self.ca = ""
        while not self.ca:
            line = self.process.stdout.readline()
            assert line, f"daskstep serve stopped: {''.join(lines)}"
            lines.append(line)
            if m := re.search(r"daskstep serve: (https://\S+)", line):
                self.url = m[1]
            if m := re.search(r"REANA_SERVER_CA_CERTS=(\S+)", line):
                self.ca = m[1]
        self.said = "".join(lines)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process is None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def approve(self, code: str, email: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "daskstep", "serve", "approve", code, "--user", email,
             "--workspaces", str(self.root)],
            check=True, timeout=60, capture_output=True,
        )  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    found = Server(tmp_path_factory.mktemp("serve") / "workspaces")
    found.start()
    yield found
    found.stop()


class User:
    """One reana-client user: a HOME of their own for its credential store."""

    def __init__(self, binary: Path, server: Server, home: Path, email: str) -> None:
        self.binary, self.server, self.home, self.email = binary, server, home, email
        home.mkdir(parents=True, exist_ok=True)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REANA_")}
        return {**env, "HOME": str(self.home), "REANA_SERVER_CA_CERTS": self.server.ca}

    def __call__(
        self, *args: str, cwd: Path | None = None, ok: bool = True, token: str = ""
    ) -> str:
        env = {**self.env(), "REANA_ACCESS_TOKEN": token} if token else self.env()
        done = subprocess.run(
            [str(self.binary), *args], env=env, cwd=cwd, capture_output=True,
            text=True, timeout=180,
        )  # fmt: skip
        out = done.stdout + done.stderr
        if ok:
            assert done.returncode == 0, f"reana-client {' '.join(args)}: {out}"
        return out

    def login(self) -> None:
        process = subprocess.Popen(
            [str(self.binary), "login", "--server", self.server.url, "--headless"],
            env=self.env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert process.stdout is not None
        code = None
        seen = []
        while code is None:
            line = process.stdout.readline()
            assert line, f"reana-client login ended: {''.join(seen)}"
            seen.append(line)
            if m := re.search(r"user_code=([A-Z-]+)", line):
                code = m[1]
        self.server.approve(code, self.email)
        rest, _ = process.communicate(timeout=60)
        assert process.returncode == 0, "".join(seen) + rest
        assert f"Logged in to {self.server.url}" in rest

    def wait(self, workflow: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self("status", "-w", workflow, "--json")
            status = json.loads(out)[0]["status"]
            if status in ENDED:
                return status
            time.sleep(1)
        raise AssertionError(f"{workflow} did not end within {timeout} s")


def test_reana_client_runs_follows_and_fetches_a_dask_workflow(
    reana_client: Path, server: Server, tmp_path: Path
) -> None:
    alice = User(reana_client, server, tmp_path / "alice", "alice@example.org")
    alice.login()
    out = alice("ping")
    assert "Authenticated as: alice <alice@example.org>" in out and "Status: Connected" in out
    assert "List of supported compute backends: local" in alice("info")

    analysis = tmp_path / "dask-bag"
    shutil.copytree(EXAMPLE, analysis)
    out = alice("run", "-w", "dask-demo", cwd=analysis)
    assert "dask-demo.1" in out
    assert alice.wait("dask-demo") == "finished"

    logs = alice("logs", "-w", "dask-demo")
    assert "==> Step: generate" in logs and "wrote 8 files" in logs  # the step's own lines
    assert "==> Service: reana-run-dask-" in logs
    assert "==> Component: scheduler" in logs and "distributed.scheduler" in logs
    assert "==> Component: worker-0" in logs and "distributed.worker" in logs
    assert "histogram.png" in alice("ls", "-w", "dask-demo")

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    alice("download", "histogram.png", "-w", "dask-demo", cwd=downloads)
    (kept,) = server.root.glob("*/*/histogram.png")
    assert (downloads / "histogram.png").read_bytes() == kept.read_bytes()
    listed = alice("list")
    assert re.search(r"dask-demo\s+1\s.*finished", listed), listed

    out = alice("run", "-w", "dask-demo", cwd=analysis)
    assert "dask-demo.2" in out
    assert alice.wait("dask-demo.2") == "finished"
    assert "==> Step: analyse" in alice("logs", "-w", "dask-demo.2")

    checked = subprocess.run(
        [str(reana_client.parent / "python"), "-c", CHECK_RESPONSES,
         server.url, server.ca, "dask-demo.2"],
        env=alice.env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["validated"] == 11

    assert "data/part-00.jsonl" in alice("rm", "-w", "dask-demo.2", "data/part-00.jsonl")
    assert "data/part-00.jsonl" not in alice("ls", "-w", "dask-demo.2")
    assert "Valid REANA specification file" in alice("validate", cwd=analysis)
    assert "histogram.png" not in alice("du", "-w", "dask-demo.2")  # one line: its size
    alice("delete", "-w", "dask-demo.1")
    listed = alice("list")
    assert not re.search(r"dask-demo\s+1\s", listed) and re.search(r"dask-demo\s+2\s", listed)

    bob = User(reana_client, server, tmp_path / "bob", "bob@example.org")
    bob.login()
    assert "dask-demo" not in bob("list")
    assert "does not exist" in bob("status", "-w", "dask-demo.2", ok=False)
    assert "histogram.png" not in bob("ls", "-w", "dask-demo.2", ok=False)

    # tokens that are not the server's: unsigned, expired, signed by another key
    import base64
    import sqlite3

    from joserfc import jwt
    from joserfc.jwk import ECKey

    with sqlite3.connect(server.root / ".daskstep-serve" / "serve.db") as db:
        (alice_id,) = db.execute("SELECT id FROM users WHERE email = ?", (alice.email,)).fetchone()
    key = ECKey.import_key(
        json.loads((server.root / ".daskstep-serve/issuer-key.json").read_text())
    )
    now = int(time.time())
    claims = {"iss": server.url, "sub": alice_id, "iat": now - 3600, "exp": now - 1800}
    tokens = {
        "unsigned": ".".join(
            base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
            for part in ({"alg": "none"}, {**claims, "exp": now + 600})
        ) + ".c2lnbmF0dXJl",  # a signature the client sees, of alg none
        "expired": jwt.encode({"alg": "ES256"}, claims, key),
        "forged": jwt.encode({"alg": "ES256"}, {**claims, "exp": now + 600},
                             ECKey.generate_key("P-256", private=True)),
    }  # fmt: skip
    for what, token in tokens.items():
        out = bob("list", ok=False, token=token)
        assert "access token is missing, expired or not this server's" in out, (what, out)


SLEEPER = """\
workflow:
  type: serial
  resources:
    dask:
      image: docker.io/daskstep/test:1.0
      number_of_workers: 2
      single_worker_memory: 1Gi
      single_worker_threads: 1
  specification:
    steps:
      - name: wait
        commands:
          - python -c "import time; time.sleep(300)"
"""


def run_processes(server: Server, name: str, number: int) -> list[int]:
    """The pids of a run: its `daskstep run`, the cluster's launcher and its workers."""
    import sqlite3

    with sqlite3.connect(server.root / ".daskstep-serve" / "serve.db") as db:
        workspace, pid = db.execute(
            "SELECT workspace, pid FROM workflows WHERE name = ? AND run_number = ?",
            (name, number),
        ).fetchone()
    try:
        status = json.loads((Path(workspace) / ".daskstep" / "status.json").read_text())
    except (OSError, ValueError):
        status = {}
    cluster = status.get("cluster") or {}
    pids = [pid, cluster.get("launcher_pid"), *(cluster.get("worker_pids") or {}).values()]
    return [p for p in pids if isinstance(p, int)]


def alive(pids: list[int]) -> list[int]:
    import psutil

    found = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                found.append(pid)
        except psutil.Error:
            pass
    return found


def wait_running(user: User, server: Server, name: str, number: int) -> list[int]:
    """Until the run's step computes on its cluster: its processes."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pids = run_processes(server, name, number)
        if len(alive(pids)) >= 4:  # the controller, the launcher and two workers
            return pids
        time.sleep(0.5)
    raise AssertionError(f"{name}.{number} did not start its cluster: {user('logs', '-w', name)}")


def gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive(pids)


def test_runs_queue_stop_tears_the_cluster_down_and_a_restart_fails_the_run_it_lost(
    reana_client: Path, tmp_path: Path
) -> None:
    server = Server(tmp_path / "workspaces", max_runs=1)
    server.start()
    try:
        alice = User(reana_client, server, tmp_path / "alice", "alice@example.org")
        alice.login()
        analysis = tmp_path / "sleeper"
        analysis.mkdir()
        (analysis / "reana.yaml").write_text(SLEEPER)

        alice("run", "-w", "sleeper", cwd=analysis)
        pids = wait_running(alice, server, "sleeper", 1)
        alice("run", "-w", "sleeper", cwd=analysis)  # one run at a time: this one waits
        assert re.search(r"sleeper\s+2\s.*queued", alice("list"))
        started = time.monotonic()
        assert "stopped" in alice("stop", "-w", "sleeper.1", "--force")
        assert gone_within(pids, 10) == [], "the cluster outlived stop by 10 s"
        assert time.monotonic() - started < 10
        assert alice.wait("sleeper.1", 30) == "stopped"

        pids = wait_running(alice, server, "sleeper", 2)  # the queue moved on
        server.stop(signal.SIGKILL)  # the server dies mid-run, as a machine's OOM killer would
        assert gone_within(pids, 15) == [], "the run outlived its server"
        server.start()
        assert alice.wait("sleeper.2", 30) == "failed"
        assert alive(pids) == []
        assert "sleeper.2 was running when the server stopped" in server.said
    finally:
        server.stop()


def test_browser_login_goes_through_the_loopback_callback_with_pkce(
    reana_client: Path, server: Server, tmp_path: Path
) -> None:
    """`reana-client login` without --headless: the test is the browser (BROWSER=true opens
    nothing), and approves the code the authorization page shows."""
    import ssl
    import urllib.error
    import urllib.request

    carol = User(reana_client, server, tmp_path / "carol", "carol@example.org")
    process = subprocess.Popen(
        [str(carol.binary), "login", "--server", server.url],
        env={**carol.env(), "BROWSER": "true"}, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert process.stdout is not None
    seen: list[str] = []
    while not (seen and seen[-1].startswith(f"{server.url}/oauth/authorize?")):
        line = process.stdout.readline()
        assert line, f"reana-client login ended: {''.join(seen)}"
        seen.append(line)
    context = ssl.create_default_context(cafile=server.ca)

    class Stay(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None  # the test reads the redirect, as a browser would follow it

    browser = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), Stay)
    page = browser.open(seen[-1].strip(), timeout=30).read().decode()
    code = re.search(r"daskstep serve approve ([A-Z-]+)", page)
    assert code, page
    server.approve(code[1], carol.email)
    follow = re.search(r'url=([^"]+)"', page)
    assert follow, page
    with pytest.raises(urllib.error.HTTPError) as redirect:
        browser.open(server.url + follow[1].replace("&amp;", "&"), timeout=30)
    assert redirect.value.code == 302
    callback = redirect.value.headers["Location"]
    assert callback.startswith("http://127.0.0.1:") and "code=" in callback
    urllib.request.urlopen(callback, timeout=30).read()
    rest, _ = process.communicate(timeout=60)
    assert process.returncode == 0, "".join(seen) + rest
    assert "Authenticated as: carol <carol@example.org>" in carol("ping")


def test_a_keytab_secret_lets_the_workers_read_from_a_kerberos_xrootd(
    reana_client: Path,
    kdc: Kdc,
    krb5_xrootd: XRootD,  # noqa: F811 (test_run_credentials's fixture)
    tmp_path: Path,
) -> None:
    """secrets-add of a keytab (REANA's CERN_USER, CERN_KEYTAB and the file it names) becomes
    the run's --secrets: the Kerberos sidecar gets tickets, the Dask tasks read over root://."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRB5", "X509", "VOMS"))}
    env.update(KRB5_CONFIG=kdc.krb5_config, KRB5CCNAME=f"FILE:{tmp_path}/no-such-cache")
    server = Server(tmp_path / "workspaces", env)
    server.start()
    try:
        dave = User(reana_client, server, tmp_path / "dave", "dave@example.org")
        dave.login()
        principal, keytab = kdc.principal("servereader", tmp_path)
        upload = tmp_path / "upload"
        upload.mkdir()
        shutil.copy(keytab, upload / ".keytab")
        dave("secrets-add", "--env", f"CERN_USER={principal}", "--env", "CERN_KEYTAB=.keytab",
             "--file", str(upload / ".keytab"))  # fmt: skip
        listed = dave("secrets-list")
        assert "CERN_USER" in listed and ".keytab" in listed and principal not in listed

        analysis = tmp_path / "reader"
        reana = reader_workflow(analysis, krb5_xrootd.url(), ("kerberos",))
        reana.write_text(reana.read_text() + "inputs:\n  files: [reader.py]\n")
        dave("run", "-w", "krb", cwd=analysis)
        status = dave.wait("krb")
        logs = dave("logs", "-w", "krb")
        assert status == "finished", logs
        assert "reads on 2 workers" in logs
        assert all(r["sum"] == EXPECTED_SUM for r in json.loads(
            next(server.root.glob("*/*/reads.json")).read_text()))  # fmt: skip
        secret = keytab.read_bytes()
        assert (
            secret.hex() not in logs
            and principal
            in server.root.joinpath(".daskstep-serve", "secrets")
            .rglob("CERN_USER")
            .__next__()
            .read_text()
        )
        assert ".keytab" not in dave("ls", "-w", "krb")
        dave("secrets-delete", "CERN_USER")
        assert "CERN_USER" not in dave("secrets-list")
    finally:
        server.stop()
