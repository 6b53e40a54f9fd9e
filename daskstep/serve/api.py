"""The REANA API's frame: bearer authentication, REANA's error bodies, the server and user
endpoints (ping, info, you, secrets), and the issuer's endpoints (discovery, device
authorization, token, keys).

Every body is what reana_server.json (reana-commons 0.95) declares, since reana-client checks
each response against it (bravado's `validate_responses`). An error is `{"message": ...}` in
one line; a request daskstep does not support answers 501 with a line that says so.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import tornado.web

from daskstep.serve.issuer import Issuer
from daskstep.serve.store import Store, User

API_CAPABILITIES = ["workflow-specification-bundles-v1"]  # what 0.95's `create` demands
SECRET_NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}$")  # .keytab too
MAX_SECRET_BYTES = 1 << 20


class Context:
    """What every handler shares."""

    def __init__(self, store: Store, issuer: Issuer, runs: Any, backend: str, version: str):
        self.store, self.issuer, self.runs = store, issuer, runs
        self.backend, self.version = backend, version

    def secrets_folder(self, user_id: str) -> Path:
        return self.store.state / "secrets" / user_id


class Base(tornado.web.RequestHandler):
    """JSON in and out; errors as REANA's `{"message": ...}`, never a traceback."""

    AUTH = True

    def initialize(self, ctx: Context) -> None:
        self.ctx = ctx
        self.user: User | None = None

    def set_default_headers(self) -> None:
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")

    def prepare(self) -> None:
        if not self.AUTH:
            return
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        user = self.ctx.issuer.user_of(token.strip()) if scheme.lower() == "bearer" else None
        if user is None:
            raise tornado.web.HTTPError(
                401,
                reason="the access token is missing, expired or "
                "not this server's: run reana-client login",
            )
        self.user = user

    def send(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(value))

    def body_json(self, default: Any = None) -> Any:
        if not self.request.body:
            return default
        try:
            return json.loads(self.request.body)
        except ValueError:
            raise tornado.web.HTTPError(400, reason="the body is not JSON") from None

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"message": self._reason}))

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """Expected refusals are not logged with their request (which may hold a secret)."""
        if not isinstance(value, tornado.web.HTTPError):
            super().log_exception(typ, value, tb)


def refuse(status: int, message: str) -> tornado.web.HTTPError:
    return tornado.web.HTTPError(status, reason=message.replace("\n", " "))


class Unsupported(Base):
    """Whatever daskstep serve does not answer: one line, as REANA answers a request it lacks."""

    AUTH = False

    def prepare(self) -> None:
        what = f"{self.request.method} {self.request.path}"
        raise refuse(501, f"{what} is not supported by daskstep serve")


class Ping(Base):
    AUTH = False

    def get(self) -> None:
        self.send(
            {
                "message": "OK",
                "status": "200",
                "reana_server_version": self.ctx.version,
                "api_capabilities": API_CAPABILITIES,
            }
        )


class You(Base):
    def get(self) -> None:
        assert self.user is not None
        usage = {"raw": 0, "human_readable": "0 B"}
        self.send(
            {
                "email": self.user.email,
                "full_name": self.user.full_name,
                "reana_server_version": self.ctx.version,
                "quota": {
                    "cpu": {"usage": {"raw": 0, "human_readable": "0s"}, "health": "healthy"},
                    "disk": {"usage": usage, "health": "healthy"},
                },
            }
        )


class Info(Base):
    def get(self) -> None:
        from daskstep.workflow.limits import load_limits

        limits = load_limits(None)

        def item(title: str, value: Any) -> dict[str, Any]:
            return {"title": title, "value": value if isinstance(value, list) else str(value)}

        self.send(
            {
                "compute_backends": item("List of supported compute backends", [self.ctx.backend]),
                "default_workspace": item("Default workspace", str(self.ctx.store.root)),
                "workspaces_available": item(
                    "List of available workspaces", [str(self.ctx.store.root)]
                ),
                "dask_enabled": item("Dask workflows allowed in the cluster", "True"),
                "dask_autoscaler_enabled": item(
                    "Dask autoscaler enabled in the cluster", str(bool(limits.autoscaler))
                ),
                "dask_cluster_default_number_of_workers": item(
                    "The number of Dask workers created by default",
                    limits.default_number_of_workers,
                ),
                "dask_cluster_max_number_of_workers": item(
                    "The maximum number of Dask workers", limits.max_number_of_workers
                ),
                "dask_cluster_default_single_worker_memory": item(
                    "The amount of memory used by default by a single Dask worker",
                    limits.default_single_worker_memory,
                ),
                "dask_cluster_max_single_worker_memory": item(
                    "The maximum amount of memory that a single Dask worker can use",
                    limits.max_single_worker_memory,
                ),
                "dask_cluster_max_memory_limit": item(
                    "The maximum memory limit for Dask clusters created by users",
                    limits.max_memory_limit,
                ),
                "dask_cluster_default_single_worker_threads": item(
                    "The number of threads used by default by a single Dask worker",
                    limits.default_single_worker_threads,
                ),
                "dask_cluster_max_single_worker_threads": item(
                    "The maximum number of threads that a single Dask worker can use",
                    limits.max_single_worker_threads,
                ),
            }
        )


class Secrets(Base):
    """A user's secrets: files 0600 in a folder of their own (the runs' `--secrets`), never
    sent back, never logged; their names and types only."""

    def folder(self) -> Path:
        assert self.user is not None
        return self.ctx.secrets_folder(self.user.id)

    def types_file(self) -> Path:
        """Beside the folder, so that the folder holds the secrets alone."""
        return self.folder().with_name(f"{self.folder().name}.types.json")

    def types(self) -> dict[str, str]:
        try:
            return json.loads(self.types_file().read_text())
        except (OSError, ValueError):
            return {}

    def get(self) -> None:
        self.send([{"name": n, "type": t} for n, t in sorted(self.types().items())])

    def post(self) -> None:
        given = self.body_json({})
        overwrite = self.get_query_argument("overwrite", "false").lower() == "true"
        if not isinstance(given, dict) or not given:
            raise refuse(400, "secrets: give {NAME: {value: BASE64, type: env|file}}")
        types = self.types()
        decoded = {}
        for name, spec in given.items():
            if not SECRET_NAME.match(str(name)):
                raise refuse(400, f"secret name {name!r}: use letters, digits, _ . -")
            kind = spec.get("type") if isinstance(spec, dict) else None
            if kind not in ("env", "file"):
                raise refuse(400, f"secret {name}: type must be env or file")
            try:
                decoded[name] = base64.b64decode(str(spec.get("value", "")), validate=True)
            except ValueError:
                raise refuse(400, f"secret {name}: value must be base64") from None
            if len(decoded[name]) > MAX_SECRET_BYTES:
                raise refuse(400, f"secret {name}: larger than 1 MiB")
            if name in types and not overwrite:
                raise refuse(409, f"secret {name} already exists: use --overwrite")
        folder = self.folder()
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for name, value in decoded.items():
            _write_private(folder / name, value)
            types[name] = given[name]["type"]
        _write_private(self.types_file(), json.dumps(types).encode())
        self.send({"message": "Secrets successfully added."}, 201)

    def delete(self) -> None:
        names = self.body_json([])
        if not isinstance(names, list):
            raise refuse(400, "secrets: give a list of names")
        types = self.types()
        missing = [n for n in names if n not in types]
        if missing:
            self.send(missing, 404)
            return
        for name in names:
            (self.folder() / name).unlink(missing_ok=True)
            types.pop(name)
        _write_private(self.types_file(), json.dumps(types).encode())
        self.send(names)


def _write_private(path: Path, data: bytes) -> None:
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


# -- the issuer ------------------------------------------------------------------------------


class Discovery(Base):
    AUTH = False

    def get(self) -> None:
        self.send(self.ctx.issuer.discovery())


class Keys(Base):
    AUTH = False

    def get(self) -> None:
        self.send(self.ctx.issuer.jwks())


class OAuth(Base):
    """The device authorization and token endpoints: Authlib answers."""

    AUTH = False

    def post(self, endpoint: str) -> None:
        issuer = self.ctx.issuer
        if endpoint == "token":
            status, body, headers = issuer.create_token_response(self.request)
        else:
            status, body, headers = issuer.create_endpoint_response(
                "device_authorization", self.request
            )
        for name, value in headers:
            self.set_header(name, value)
        self.send(body, status)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": "invalid_request", "error_description": self._reason}))


class DevicePage(Base):
    """Where the client's prompt points: this machine approves, not a page."""

    AUTH = False

    def get(self) -> None:
        code = self.get_query_argument("user_code", "CODE")
        code = code if re.fullmatch(r"[A-Z-]{1,16}", code) else "CODE"
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(
            f"approve this login on the server: daskstep serve approve {code} --user EMAIL\n"
        )
