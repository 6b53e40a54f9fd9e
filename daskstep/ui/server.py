"""`daskstep ui`: REANA's run pages for daskstep's workspaces, served by tornado (which
distributed already brings), pages from jinja2 templates with everything inlined: no page
loads anything from outside the machine, and the Content-Security-Policy says so to the browser.

Read-only by construction: every handler answers GET alone, and reads the records (data.py).
On any address but loopback a token is demanded (printed at the start, as Jupyter does); a
path outside a workspace, into its run records or through a symlink out is a 404.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import mimetypes
import secrets
from pathlib import Path
from typing import Any

import tornado.web

from daskstep.record import RunFolder, Workspace, read_status
from daskstep.ui import data, pages

TOKEN_COOKIE = "daskstep-ui-token"
TEXT = (".yaml", ".yml", ".log", ".cwl", ".smk", ".cfg", ".toml", ".ini", ".md")  # shown as text
# what a page may load: this server, inline code (the report embeds bokeh), and data: images
POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host == "localhost"


class Base(tornado.web.RequestHandler):
    """Every page and API call: the token first (when one is set), security headers, and
    errors as one plain line, never a traceback."""

    def initialize(self, workspaces: list[Workspace], token: str | None) -> None:
        self.workspaces, self.token = workspaces, token

    def set_default_headers(self) -> None:
        self.set_header("Content-Security-Policy", POLICY)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")
        self.set_header("Cache-Control", "no-store")

    def prepare(self) -> None:
        if self.token is None:
            return
        given = self.get_query_argument("token", None)
        header = self.request.headers.get("Authorization", "")
        candidates = [given, self.get_cookie(TOKEN_COOKIE), header.removeprefix("token ")]
        if not any(c and hmac.compare_digest(c, self.token) for c in candidates):
            reason = "a token is needed: the one daskstep ui printed"
            raise tornado.web.HTTPError(403, reason=reason)
        if given:
            self.set_cookie(TOKEN_COOKIE, given, httponly=True, samesite="Strict")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish(f"{status_code} {self._reason}\n")

    def workspace(self, index: str) -> Workspace:
        i = int(index)
        if i >= len(self.workspaces):
            raise tornado.web.HTTPError(404, reason="no such workspace")
        return self.workspaces[i]

    def send_json(self, value: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(json.dumps(value, default=str))

    def page(self, name: str, **values: Any) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(pages.render(name, **values))


class NotFound(Base):
    def get(self, *args: str) -> None:
        raise tornado.web.HTTPError(404, reason="not found")


class NoIcon(Base):
    def get(self) -> None:
        self.set_status(204)  # no icon: said, so that a browser does not log a 404
        self.finish()


class RunsPage(Base):
    def get(self) -> None:
        self.page("runs.html", workspaces=[str(w.root) for w in self.workspaces])


class RunsAPI(Base):
    def get(self) -> None:
        self.send_json(data.runs(self.workspaces))


class RunPage(Base):
    def get(self, index: str, number: str) -> None:
        detail = data.run_detail(self.workspace(index), int(index), int(number))
        if detail is None:
            raise tornado.web.HTTPError(404, reason="no such run")
        self.page("run.html", run=detail)


class RunAPI(Base):
    def get(self, index: str, number: str) -> None:
        detail = data.run_detail(self.workspace(index), int(index), int(number))
        if detail is None:
            raise tornado.web.HTTPError(404, reason="no such run")
        self.send_json(detail)


class LogAPI(Base):
    """?stream=job|engine|scheduler|worker:NAME and before=SEQ (older page) or after=SEQ
    (following); limit= lines. stream=workers merges them all, its cursors one per worker:
    before=worker-0:12,worker-1:40."""

    def get(self, index: str, number: str) -> None:
        workspace = self.workspace(index)
        if int(number) not in workspace.numbers():
            raise tornado.web.HTTPError(404, reason="no such run")
        run = workspace.run_folder(int(number))
        stream = self.get_query_argument("stream", "job")
        limit = self._number("limit") or data.PAGE_LINES
        if stream == "workers":
            paths = data.worker_paths(run)
            before, after = self._cursor("before", paths), self._cursor("after", paths)
            self.send_json(data.merged_page(paths, before, after, limit))
            return
        path = data.stream_path(run, stream)
        if path is None:
            raise tornado.web.HTTPError(404, reason="no such log")
        before, after = self._number("before"), self._number("after")
        if (step := self._number("step")) is not None and stream == "job":
            after = self._step_start(run, path, step) - 1  # the step's lines, from its start
        self.send_json(data.log_page(path, before, after, limit))

    def _step_start(self, run: RunFolder, path: Path, step: int) -> int:
        steps = read_status(run).get("steps") or []
        if not 1 <= step <= len(steps) or not isinstance(steps[step - 1], dict):
            raise tornado.web.HTTPError(404, reason="no such step")
        seq = data.step_start(path, str(steps[step - 1].get("name")), step, len(steps))
        if seq is None:
            raise tornado.web.HTTPError(404, reason="the step has not started")
        return seq

    def _number(self, name: str, value: str | None = None) -> int | None:
        value = self.get_query_argument(name, None) if value is None else value
        if value is None or value == "":
            return None
        if not value.isdigit() or len(value) > 12:
            raise tornado.web.HTTPError(400, reason=f"{name} must be a line number")
        return int(value)

    def _cursor(self, name: str, paths: dict[str, Path]) -> dict[str, int] | None:
        value = self.get_query_argument(name, None)
        if value is None:
            return None
        cursor: dict[str, int] = {}
        for part in filter(None, value.split(",")):
            worker, _, seq = part.rpartition(":")
            if worker not in paths:
                raise tornado.web.HTTPError(400, reason=f"{name}: no worker {worker[:40]!r}")
            cursor[worker] = self._number(name, seq) or 0
        return cursor


class ReportFile(Base):
    def get(self, index: str, number: str) -> None:
        workspace = self.workspace(index)
        if int(number) not in workspace.numbers():
            raise tornado.web.HTTPError(404, reason="no such run")
        report = workspace.run_folder(int(number)).report_html
        if not report.is_file():
            raise tornado.web.HTTPError(404, reason="no report (yet)")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(report.read_bytes())


class FilesAPI(Base):
    def get(self, index: str) -> None:
        workspace = self.workspace(index)
        self.send_json(data.files(workspace.root, pages.outputs_of(workspace)))


class WorkspaceFile(Base):
    """A workspace file, read-only: images inline, anything else as plain text or a download,
    never as a page of this origin (a workspace's .html could otherwise script the API)."""

    def get(self, index: str, relative: str) -> None:
        path = data.safe_file(self.workspace(index).root, relative)
        if path is None:
            raise tornado.web.HTTPError(404, reason="no such file")
        kind = mimetypes.guess_type(path.name)[0] or ""
        if path.suffix.lower() in data.IMAGES and path.suffix.lower() != ".svg":
            self.set_header("Content-Type", kind)
        elif kind.startswith("text/") or kind == "application/json" or path.suffix in TEXT:
            self.set_header("Content-Type", "text/plain; charset=utf-8")
        else:
            self.set_header("Content-Type", "application/octet-stream")
            self.set_header("Content-Disposition", f'attachment; filename="{path.name}"')
        self.finish(path.read_bytes())


def application(workspaces: list[Path], token: str | None) -> tornado.web.Application:
    options = {"workspaces": [Workspace(w) for w in workspaces], "token": token}
    routes = [
        (r"/", RunsPage),
        (r"/favicon.ico", NoIcon),
        (r"/api/runs", RunsAPI),
        (r"/runs/(\d{1,6})/(\d{1,9})", RunPage),
        (r"/api/runs/(\d{1,6})/(\d{1,9})", RunAPI),
        (r"/api/runs/(\d{1,6})/(\d{1,9})/log", LogAPI),
        (r"/runs/(\d{1,6})/(\d{1,9})/report", ReportFile),
        (r"/api/files/(\d{1,6})", FilesAPI),
        (r"/files/(\d{1,6})/(.+)", WorkspaceFile),
    ]
    return tornado.web.Application(
        [(pattern, handler, options) for pattern, handler in routes],
        default_handler_class=NotFound,
        default_handler_args=options,
        serve_traceback=False,
        compress_response=True,
    )


def new_token(host: str, given: str | None = None) -> str | None:
    """None on loopback (unless one is given); else the given one or a fresh one."""
    if given:
        return given
    return None if loopback(host) else secrets.token_urlsafe(24)
