"""`daskstep ui` over HTTP: a real tornado server on a loopback port, reading run records made
by the real writers (Workspace, LogStore), asked as a browser would ask."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from daskstep.record import Workspace
from daskstep.ui.server import application, new_token
from sidecar.store import LogStore

LINES = 1000


def make_workspace(root: Path) -> Workspace:
    """Two runs: #1 finished with a histogram, #2 running with 1000 job lines."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "reana.yaml").write_text("outputs:\n  files: [results/histogram.png]\n")
    (root / "results").mkdir()
    (root / "results" / "histogram.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    (root / "analysis.py").write_text("print('hi')\n")
    (root / "page.html").write_text("<script>alert(1)</script>")
    ws = Workspace(root)
    for number, status in ((1, "finished"), (2, "running")):
        run = ws.new_run()
        assert run.number == number
        doc = {
            "run": number, "status": status, "workflow": str(root / "reana.yaml"),
            "started_at": f"2026-12-0{number}T10:00:00.000Z",
            "exit_code": 0 if number == 1 else None,
            "controller": f"{os.uname().nodename}:{os.getpid()}",
            "steps": [{"name": "fit", "status": "finished", "exit_code": 0},
                      {"name": "plot", "status": status}],
            "events": [{"time": "t", "component": "worker worker-1", "what": "lost", "why": "x"}],
            "cluster": {"backend": "local", "dashboard": "http://127.0.0.1:8787/status"},
        }  # fmt: skip
        run.status_file.write_text(json.dumps(doc))
        store = LogStore(run.logs)
        job = [f"job line {i}\n".encode() for i in range(1, LINES + 1)]
        job[599] = b"daskstep: step plot (2/2) started\n"  # where the second step's lines begin
        store.stream("job").append(job)
        store.stream("worker", "worker-0").append([b"Start worker at: tls://127.0.0.1:1\n"])
        for name, first in (("worker-1", 1), ("worker-2", 2)):  # interleaved in time
            stamps = [2 * 10**18 + 10 * i + first for i in range(50)]  # after worker-0
            lines = [f"{name} line {i}\n".encode() for i in range(1, 51)]
            store.stream("worker", name).append(lines, stamps)
        store.close()
    ws.run_folder(1).report_html.write_text("<html>the report</html>")
    return ws


class Served:
    def __init__(self, roots: list[Path], token: str | None = None) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = application(roots, token).listen(0, address="127.0.0.1")
            self.port = next(iter(self.server._sockets.values())).getsockname()[1]
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}", headers=headers or {}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, path: str) -> object:
        code, _, body = self.get(path)
        assert code == 200, body
        return json.loads(body)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("ui") / "ws"
    make_workspace(root)
    (root.parent / "secret.txt").write_text("outside the workspace")
    (root / "out-link").symlink_to(root.parent / "secret.txt")
    (root / "out-dir").symlink_to(root.parent)
    secrets = root / "secrets"  # a user's --secrets folder, inside the workspace
    secrets.mkdir()
    for name in ("CERN_USER", "CERN_KEYTAB", "alice.keytab", "VOMSPROXY_PASS", "other"):
        (secrets / name).write_text("outside the workspace")  # never to be served either
    (root / "x509up_u1000").write_text("outside the workspace")
    (root / "userkey.pem").write_text("outside the workspace")
    return root


@pytest.fixture(scope="module")
def served(workspace: Path) -> Iterator[Served]:
    server = Served([workspace])
    yield server
    server.stop()


def test_the_runs_are_listed_newest_first_with_their_step(served: Served) -> None:
    runs = served.json("/api/runs")
    assert [(r["run"], r["status"], r["steps"]) for r in runs] == [
        (2, "running", "1/2"), (1, "finished", "2/2")
    ]  # fmt: skip
    assert runs[0]["name"] == "ws" and runs[0]["backend"] == "local"
    assert [r["report"] for r in runs] == [False, True]
    code, headers, page = served.get("/")
    assert code == 200 and b'<table id="runs">' in page
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert b"http://" not in page and b"https://" not in page  # nothing from elsewhere


def test_a_run_page_has_steps_events_streams_and_the_dashboard_while_it_lives(
    served: Served,
) -> None:
    live = served.json("/api/runs/0/2")
    assert [s["name"] for s in live["steps"]] == ["fit", "plot"]
    assert live["events"][0]["what"] == "lost"
    assert live["streams"] == ["job", "workers", "worker:worker-0", "worker:worker-1",
                               "worker:worker-2"]  # fmt: skip
    assert live["dashboard"] == "http://127.0.0.1:8787/status" and live["report"] is False
    done = served.json("/api/runs/0/1")
    assert done["dashboard"] is None and done["report"] is True
    code, _, page = served.get("/runs/0/2")
    assert code == 200 and b'data-run="2"' in page
    code, _, report = served.get("/runs/0/1/report")
    assert (code, report) == (200, b"<html>the report</html>")


def test_a_log_is_paged_newest_first_and_followed(served: Served) -> None:
    first = served.json("/api/runs/0/2/log?stream=job")
    assert first["total"] == LINES and len(first["lines"]) == 200
    assert first["lines"][0] == {"seq": LINES, "ts": first["lines"][0]["ts"],
                                 "text": f"job line {LINES}\n", "partial": False}  # fmt: skip
    older = served.json(f"/api/runs/0/2/log?stream=job&before={first['before']}&limit=300")
    assert [line["seq"] for line in older["lines"]] == list(range(800, 500, -1))
    assert older["lines"][0]["text"] == "job line 800\n"
    follow = served.json("/api/runs/0/2/log?stream=job&after=995")
    assert [line["text"] for line in follow["lines"]] == [
        f"job line {i}\n" for i in range(996, 1001)
    ]
    worker = served.json("/api/runs/0/2/log?stream=worker:worker-0")
    assert worker["lines"][0]["text"].startswith("Start worker at")
    assert served.json("/api/runs/0/2/log?stream=job&after=1000")["lines"] == []


def test_a_step_opens_at_its_first_line_in_the_jobs_log(served: Served) -> None:
    page = served.json("/api/runs/0/2/log?stream=job&step=2&limit=3")
    assert [(line["seq"], line["text"]) for line in page["lines"]] == [
        (600, "daskstep: step plot (2/2) started\n"), (601, "job line 601\n"),
        (602, "job line 602\n"),
    ]  # fmt: skip
    for step, why in ((1, b"has not started"), (3, b"no such step")):
        code, _, body = served.get(f"/api/runs/0/2/log?stream=job&step={step}")
        assert code == 404 and why in body


def test_all_the_workers_in_one_tab_by_time_with_a_cursor_each(served: Served) -> None:
    url = "/api/runs/0/2/log?stream=workers&limit=6"
    newest = served.json(url)
    assert [(line["stream"], line["seq"]) for line in newest["lines"]] == [
        ("worker-2", 50), ("worker-1", 50), ("worker-2", 49), ("worker-1", 49),
        ("worker-2", 48), ("worker-1", 48),
    ]  # fmt: skip
    assert newest["before"] == {"worker-0": 2, "worker-1": 48, "worker-2": 48}
    older = served.json(url + "&before=worker-0:2,worker-1:48,worker-2:48")
    assert [line["text"] for line in older["lines"][:2]] == ["worker-2 line 47\n",
                                                            "worker-1 line 47\n"]  # fmt: skip
    assert newest["after"] == {"worker-0": 1, "worker-1": 50, "worker-2": 50}
    followed = served.json("/api/runs/0/2/log?stream=workers&after=worker-1:49,worker-2:50")
    assert [(line["stream"], line["seq"]) for line in followed["lines"]] == [
        ("worker-0", 1),
        ("worker-1", 50),
    ]  # a worker not in the cursor yet is read from its start
    assert followed["after"] == {"worker-0": 1, "worker-1": 50, "worker-2": 50}
    code, _, body = served.get("/api/runs/0/2/log?stream=workers&before=worker-9:3")
    assert code == 400 and b"no worker" in body


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/runs/0/9", 404),
        ("/runs/5/1", 404),
        ("/api/runs/0/9/log", 404),
        ("/api/runs/0/2/log?stream=worker:worker-9", 404),
        ("/api/runs/0/2/log?stream=../../status", 404),
        ("/api/runs/0/2/log?before=x", 400),
        ("/runs/0/2/report", 404),  # none yet
        ("/nothing/here", 404),
    ],
)
def test_what_is_not_there_is_said_in_one_line(served: Served, path: str, code: int) -> None:
    got, _, body = served.get(path)
    assert got == code, body
    assert body.count(b"\n") == 1 and b"Traceback" not in body


ESCAPES = [
    "../secret.txt",
    "..%2fsecret.txt",
    "%2e%2e/secret.txt",
    "%2e%2e%2fsecret.txt",
    "%252e%252e%252fsecret.txt",
    "results/../../secret.txt",
    "//etc/passwd",
    "%2fetc%2fpasswd",
    "..\\secret.txt",
    "out-link",
    "out-dir/secret.txt",
    ".daskstep/runs/1/status.json",
    "./.daskstep/runs/1/status.json",
    ".daskstep%2fruns%2f1%2freport.html",
    "results/histogram.png%00.txt",
    "results",
    "secrets/CERN_KEYTAB",
    "secrets/alice.keytab",
    "secrets/other",
    "x509up_u1000",
    "userkey.pem",
]


@pytest.mark.parametrize("path", ESCAPES)
def test_no_path_leaves_the_workspace_or_reaches_its_records(served: Served, path: str) -> None:
    code, _, body = served.get(f"/files/0/{path}")
    assert code == 404, body
    assert b"outside the workspace" not in body and b"Traceback" not in body


def test_files_come_outputs_first_and_never_as_pages_of_ours(served: Served) -> None:
    listed = served.json("/api/files/0")
    paths = [f["path"] for f in listed]
    assert paths[0] == "results/histogram.png" and listed[0]["output"] and listed[0]["image"]
    assert not any(p.startswith((".daskstep", "out-", "secrets", "x509", "userkey")) for p in paths)
    code, headers, body = served.get("/files/0/results/histogram.png")
    assert code == 200 and headers["Content-Type"] == "image/png" and body.startswith(b"\x89PNG")
    code, headers, _ = served.get("/files/0/page.html")  # a workspace's page cannot script ours
    assert code == 200 and headers["Content-Type"].startswith("text/plain")
    code, headers, body = served.get("/files/0/reana.yaml")
    assert code == 200 and headers["Content-Type"].startswith("text/plain") and b"outputs" in body


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.text(alphabet="./%2efc\\x-_:~ ", min_size=1, max_size=30))
def test_any_file_path_is_a_workspace_file_or_404(
    served: Served, workspace: Path, path: str
) -> None:
    quoted = urllib.request.quote(path, safe="/%")
    code, _, body = served.get(f"/files/0/{quoted}")
    assert code in (200, 400, 404), (path, code)
    assert b"outside the workspace" not in body and b"Traceback" not in body
    if code == 200:  # then it is one of the workspace's own files, out of its records
        assert body in {p.read_bytes() for p in workspace.rglob("*") if p.is_file()
                        and ".daskstep" not in p.parts and not p.is_symlink()}  # fmt: skip
        assert body != b"outside the workspace"


def test_a_token_is_demanded_when_one_is_set(workspace: Path) -> None:
    server = Served([workspace], token="s3cret-token")
    try:
        for headers in ({}, {"Authorization": "token wrong"}):
            code, _, body = server.get("/api/runs", headers)
            assert code == 403 and b"token" in body and b"Traceback" not in body
        assert server.get("/api/runs?token=nope")[0] == 403
        code, headers, _ = server.get("/?token=s3cret-token")
        assert code == 200 and "HttpOnly" in headers["Set-Cookie"]
        cookie = headers["Set-Cookie"].split(";")[0]
        assert server.get("/api/runs", {"Cookie": cookie})[0] == 200
        assert server.get("/api/runs", {"Authorization": "token s3cret-token"})[0] == 200
    finally:
        server.stop()


def test_nothing_but_reading(served: Served) -> None:
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        request = urllib.request.Request(
            f"http://127.0.0.1:{served.port}/api/runs/0/2", data=b"{}", method=method
        )
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 405 and b"Traceback" not in refused.value.read()
    assert served.json("/api/runs/0/2")["status"] == "running"


def test_only_loopback_goes_without_a_token() -> None:
    assert new_token("127.0.0.1") is None and new_token("::1") is None
    assert new_token("localhost") is None
    assert len(new_token("0.0.0.0") or "") >= 24 and new_token("10.0.0.5") != new_token("10.0.0.5")


def test_the_command_finds_workspaces_under_a_folder_and_stops_on_sigterm(
    workspace: Path, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "daskstep", "ui", str(workspace.parent), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("daskstep ui: http://127.0.0.1:"), line
        url = line.split()[-1]
        with urllib.request.urlopen(url + "api/runs", timeout=10) as answer:
            assert [r["run"] for r in json.loads(answer.read())] == [2, 1]
        proc.terminate()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    empty = subprocess.run([sys.executable, "-m", "daskstep", "ui", str(tmp_path)],
                           capture_output=True, text=True)  # fmt: skip
    assert empty.returncode == 2 and empty.stderr.count("\n") == 1
    assert "no runs in" in empty.stderr and "Traceback" not in empty.stderr
