"""daskstep serve's API in process (tornado's test server): a forged, expired or foreign token
is a 401, another user's workflow is a 404, and no upload or download leaves a workspace."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from tornado.testing import AsyncHTTPTestCase

from daskstep.serve.api import Context
from daskstep.serve.cli import application
from daskstep.serve.issuer import ALG, AccessTokens, Client, Issuer
from daskstep.serve.store import Store, User

UPLOAD_ESCAPES = [
    "../x", "//x", "a/../../x", "./../x", "..", "a/..", "x\\..\\y", "..\\x", "a//b",
    ".daskstep/status.json", ".daskstep-serve/serve.db", "link/x", "link", "data", "",
]  # fmt: skip
DOWNLOAD_ESCAPES = [
    "../other/secret.txt", "..%2Fother%2Fsecret.txt", "%2Fetc%2Fpasswd", "a/../../x",
    ".daskstep/runs/1/status.json", "link/secret.txt", "data/CERN_KEYTAB", "..", "%2e%2e/x",
    "reana.yaml%00", "data/..%2F..%2Fx",
]  # fmt: skip


class FakeRuns:
    def __init__(self) -> None:
        self.queued: list[str] = []

    def queue(self, workflow: Any, parameters: Any) -> None:
        self.queued.append(workflow.id)

    def stop(self, workflow: Any) -> None:
        pass


class Harness(AsyncHTTPTestCase):
    """The server's application on a fresh store, and tokens of its issuer or not."""

    def get_app(self) -> Any:
        self.tmp = Path(self.enterContext(_tmp()))  # type: ignore[attr-defined]
        self.store = Store(self.tmp / "workspaces")
        self.issuer = Issuer(self.store, "https://127.0.0.1:1")
        ctx = Context(self.store, self.issuer, FakeRuns(), "local", "0.95.0 (test)")
        return application(ctx)

    def token(self, user: User, key: ECKey | None = None, **claims: Any) -> str:
        tokens = AccessTokens(self.issuer.issuer, key or self.issuer.key)
        if not claims:
            return tokens.access_token_generator(Client(), "refresh_token", user, "openid")
        now = int(time.time())
        base = {"iss": self.issuer.issuer, "sub": user.id, "iat": now, "exp": now + 60}
        return jwt.encode({"alg": ALG}, {**base, **claims}, key or self.issuer.key)

    def call(self, method: str, path: str, token: str | None, body: bytes | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return self.fetch(path, method=method, headers=headers, body=body,
                          allow_nonstandard_methods=True)  # fmt: skip

    def workspace(self, user: User) -> Any:
        workflow = self.store.create_workflow(user, "demo")
        (workflow.workspace / "reana.yaml").write_text("version: 0.9.3\n")
        (workflow.workspace / "data").mkdir()
        (workflow.workspace / "data" / "CERN_KEYTAB").write_bytes(b"secret")
        outside = self.tmp / "other"
        outside.mkdir(exist_ok=True)
        (outside / "secret.txt").write_text("not yours")
        os.symlink(outside, workflow.workspace / "link")
        return workflow


class ServeAPI(Harness):
    def test_tokens_that_are_not_the_servers_are_refused(self) -> None:
        alice = self.store.user_by_email("alice@example.org", create=True)
        assert alice is not None
        assert self.call("GET", "/api/you", self.token(alice)).code == 200
        stranger = ECKey.generate_key("P-256", private=True)
        refused = {
            "none": None,
            "garbage": "not-a-jwt",
            "expired": self.token(alice, exp=int(time.time()) - 120),
            "forged": self.token(alice, key=stranger),
            "other issuer": self.token(alice, iss="https://elsewhere.example"),
            "no subject user": self.token(User("nobody", "n@example.org", "n")),
        }
        for what, token in refused.items():
            answer = self.call("GET", "/api/you", token)
            assert answer.code == 401, what
            assert "reana-client login" in json.loads(answer.body)["message"], what

    def test_another_users_workflow_is_not_found(self) -> None:
        alice = self.store.user_by_email("alice@example.org", create=True)
        bob = self.store.user_by_email("bob@example.org", create=True)
        assert alice is not None and bob is not None
        workflow = self.workspace(alice)
        for path in ("status", "workspace", "workspace/reana.yaml", "logs", "specification"):
            for name in (workflow.id, "demo", "demo.1"):
                assert (
                    self.call("GET", f"/api/workflows/{name}/{path}", self.token(bob)).code == 404
                )
        listed = json.loads(self.call("GET", "/api/workflows?type=batch", self.token(bob)).body)
        assert listed == {"items": [], "total": 0}

    def test_no_upload_leaves_the_workspace(self) -> None:
        alice = self.store.user_by_email("alice@example.org", create=True)
        assert alice is not None
        workflow = self.workspace(alice)
        before = sorted(p for p in self.tmp.rglob("*") if ".daskstep-serve" not in p.parts)
        for name in UPLOAD_ESCAPES:
            path = f"/api/workflows/{workflow.id}/workspace?file_name={quote(name, safe='')}"
            answer = self.call("POST", path, self.token(alice), b"evil")
            assert answer.code == 400, name
        after = sorted(p for p in self.tmp.rglob("*") if ".daskstep-serve" not in p.parts)
        assert after == before
        ok = f"/api/workflows/{workflow.id}/workspace?file_name=%2Fdata%2Fin.txt"
        assert self.call("POST", ok, self.token(alice), b"fine").code == 200
        assert (workflow.workspace / "data" / "in.txt").read_bytes() == b"fine"

    def test_no_download_leaves_the_workspace(self) -> None:
        alice = self.store.user_by_email("alice@example.org", create=True)
        assert alice is not None
        workflow = self.workspace(alice)
        run = workflow.workspace / ".daskstep" / "runs" / "1"
        run.mkdir(parents=True)
        (run / "status.json").write_text("{}")
        for name in DOWNLOAD_ESCAPES:
            answer = self.call("GET", f"/api/workflows/{workflow.id}/workspace/{name}",
                               self.token(alice))  # fmt: skip
            assert answer.code in (400, 404), name
            assert b"not yours" not in answer.body and answer.body != b"secret", name
        answer = self.call("GET", f"/api/workflows/{workflow.id}/workspace/reana.yaml",
                           self.token(alice))  # fmt: skip
        assert answer.code == 200 and answer.body == b"version: 0.9.3\n"

    def test_an_unsupported_request_answers_in_one_line(self) -> None:
        answer = self.call("POST", "/api/workflows/x/share", None, b"{}")
        assert answer.code == 501
        assert json.loads(answer.body) == {
            "message": "POST /api/workflows/x/share is not supported by daskstep serve"
        }


def _tmp() -> Any:
    import tempfile

    return tempfile.TemporaryDirectory()


class DeviceLogin(Harness):
    """The device flow as reana-client 0.95 runs it (PKCE-bound), then refreshes, rotated."""

    def setUp(self) -> None:
        os.environ["AUTHLIB_INSECURE_TRANSPORT"] = "1"  # tornado's test server is plain HTTP
        super().setUp()

    def tearDown(self) -> None:
        super().tearDown()
        os.environ.pop("AUTHLIB_INSECURE_TRANSPORT", None)

    def post(self, path: str, **form: str) -> tuple[int, dict[str, Any]]:
        answer = self.fetch(path, method="POST", body=urlencode(form))
        return answer.code, json.loads(answer.body)

    def login(self, verifier: str) -> tuple[int, dict[str, Any]]:
        challenge = base64.urlsafe_b64encode(hashlib.sha256(b"right").digest()).decode()
        code, device = self.post(
            "/oauth/device", client_id="reana-cli", scope="openid offline_access",
            code_challenge=challenge.rstrip("="), code_challenge_method="S256",
        )  # fmt: skip
        assert code == 200 and device["verification_uri_complete"].endswith(device["user_code"])
        grant = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                 "device_code": device["device_code"], "client_id": "reana-cli"}  # fmt: skip
        code, pending = self.post("/oauth/token", **grant, code_verifier="right")
        assert (code, pending["error"]) == (400, "authorization_pending")
        alice = self.store.user_by_email("alice@example.org", create=True)
        assert alice is not None and self.store.approve(device["user_code"], alice)
        return self.post("/oauth/token", **grant, code_verifier=verifier)

    def test_a_verifier_that_is_not_the_logins_gets_no_token(self) -> None:
        code, answer = self.login("wrong")
        assert code == 400 and "access_token" not in answer

    def test_an_approved_login_gets_a_jwt_and_refreshes_once(self) -> None:
        code, tokens = self.login("right")
        assert code == 200, tokens
        assert tokens["access_token"].count(".") == 2 and tokens["expires_in"] > 0
        assert self.call("GET", "/api/you", tokens["access_token"]).code == 200
        refresh = {"grant_type": "refresh_token", "client_id": "reana-cli",
                   "refresh_token": tokens["refresh_token"]}  # fmt: skip
        code, renewed = self.post("/oauth/token", **refresh)
        assert code == 200 and renewed["refresh_token"] != tokens["refresh_token"]
        assert self.call("GET", "/api/you", renewed["access_token"]).code == 200
        code, again = self.post("/oauth/token", **refresh)  # the old one is spent
        assert (code, again["error"]) == (400, "invalid_grant")


def test_serve_without_its_extra_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from daskstep import cli, extras

    real = extras.find_spec
    monkeypatch.setattr(extras, "find_spec", lambda m: None if m == "authlib" else real(m))
    assert cli.main(["serve", "--workspaces", str(tmp_path / "ws")]) == 2
    assert capsys.readouterr().err == (
        "error: serve: daskstep serve needs authlib, which is not installed; "
        "pip install 'daskstep[serve]'\n"
    )
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["approve"], "error: approve: give the code and --user EMAIL"),
        (["approve", "ABCD-EFGH", "--user", "nobody"], "error: approve: give the code and"),
        (["approve", "ABCD-EFGH", "--user", "a@example.org"], "error: CODE: ABCD-EFGH is no "),
        (["--port", "70000"], "error: --port: 70000 is not a port"),
        (["--max-runs", "0"], "error: --max-runs: 0: give 1 or more"),
    ],
)
def test_bad_serve_input_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], line: str
) -> None:
    from daskstep import cli

    assert cli.main(["serve", *args, "--workspaces", str(tmp_path / "ws")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(line) and err.count("\n") == 1, err


class Start(Harness):
    def test_start_refuses_what_daskstep_run_would_refuse_in_one_line(self) -> None:
        alice = self.store.user_by_email("alice@example.org", create=True)
        assert alice is not None
        workflow = self.store.create_workflow(alice, "demo")
        example = Path(__file__).resolve().parent.parent / "examples" / "dask-bag"
        for name in ("reana.yaml", "make_data.py", "analysis.py"):
            (workflow.workspace / name).write_bytes((example / name).read_bytes())
        start = f"/api/workflows/{workflow.id}/start"
        cases = {
            "nevents: not among inputs.parameters": {"input_parameters": {"nevents": "5"}},
            "operational_options: daskstep serve": {"operational_options": {"TARGET": "a"}},
        }
        for said, body in cases.items():
            answer = self.call("POST", start, self.token(alice), json.dumps(body).encode())
            message = json.loads(answer.body)["message"]
            assert answer.code == 400 and said in message and "\n" not in message, message
        body = json.dumps({"operational_options": {"CACHE": "off"}}).encode()
        answer = self.call("POST", start, self.token(alice), body)
        assert answer.code == 200 and json.loads(answer.body)["run_number"] == "1"


def bundle(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A multipart body with one `bundle` zip, as reana-client 0.95 posts on create."""
    import io
    import zipfile

    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="bundle"; '
            'filename="validation-bundle.zip"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + data.getvalue()
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return body, f"multipart/form-data; boundary={boundary}"


class Create(Harness):
    def create(self, user: User, files: dict[str, bytes]) -> Any:
        body, kind = bundle(files)
        headers = {"Authorization": f"Bearer {self.token(user)}", "Content-Type": kind}
        return self.fetch("/api/workflows?workflow_name=demo", method="POST", body=body,
                          headers=headers)  # fmt: skip

    def test_a_refused_specification_is_one_line_and_takes_no_run_number(self) -> None:
        alice = self.store.user_by_email("alice@example.org", create=True)
        assert alice is not None
        example = Path(__file__).resolve().parent.parent / "examples" / "dask-bag"
        good = (example / "reana.yaml").read_bytes()
        bad = good.replace(b"number_of_workers: 2", b"number_of_workers: 99")
        refused = {
            "number_of_workers": {"reana.yaml": bad},
            "no reana.yaml": {"other.yaml": good},
            "not a file inside": {"reana.yaml": good, "../escape.py": b"x"},
        }
        for said, files in refused.items():
            answer = self.create(alice, files)
            message = json.loads(answer.body)["message"]
            assert answer.code == 400 and said in message and "\n" not in message, message
        assert not (self.tmp / "escape.py").exists()
        answer = self.create(alice, {"reana.yaml": good})
        assert answer.code == 201 and json.loads(answer.body)["workflow_name"] == "demo.1"
        listed = self.call("GET", "/api/workflows?type=batch&size=x", self.token(alice))
        assert listed.code == 400 and "size" in json.loads(listed.body)["message"]
