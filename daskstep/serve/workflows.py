"""REANA's workflow endpoints, on the store's workflows and their workspaces: list, create
(from the specification bundle reana-client 0.95 uploads), specification, parameters, the
workspace (upload, list, download, delete), start, status (and stop, delete), logs, disk usage.

A user reaches only their own workflows (the store looks them up by user); workspace.py
keeps every path inside the workspace.
"""

from __future__ import annotations

import mimetypes
import re
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from daskstep.errors import InputError
from daskstep.record import Workspace, read_status
from daskstep.serve import reana_logs
from daskstep.serve.api import Base, refuse
from daskstep.serve.store import Workflow
from daskstep.serve.workspace import MAX_UPLOAD_BYTES, human, size_of, unpack, writable_path
from daskstep.ui.data import files as workspace_files
from daskstep.ui.data import safe_file

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")
TIME = "%Y-%m-%dT%H:%M:%S"
IGNORED_OPTIONS = {"CACHE"}  # REANA's serial cache: daskstep has none, so CACHE=off holds


def when(seconds: float | None) -> str | None:
    return time.strftime(TIME, time.gmtime(seconds)) if seconds else None


class WorkflowHandler(Base):
    """A handler that names one of the user's workflows."""

    def number(self, name: str, default: int) -> int:
        text = self.get_query_argument(name, "") or str(default)
        if not text.isdigit():
            raise refuse(400, f"{name} {text!r}: give a whole number")
        return int(text)

    def workflow(self, id_or_name: str) -> Workflow:
        assert self.user is not None
        found = self.ctx.store.workflow(self.user, id_or_name)
        if found is None:
            raise refuse(
                404, f"REANA_WORKON is set to {id_or_name}, but that workflow does not exist."
            )
        return found

    def submission(self, w: Workflow, message: str, status: str | None = None) -> dict[str, Any]:
        assert self.user is not None
        return {
            "message": message,
            "workflow_id": w.id,
            "workflow_name": w.name,
            "run_number": str(w.run_number),
            "status": status or w.status,
            "user": self.user.id,
        }

    def progress(self, w: Workflow) -> dict[str, Any]:
        run = Workspace(w.workspace).latest()
        doc = read_status(run) if run else {}
        steps = doc.get("steps") or []
        total = len(
            _spec(w.workspace).get("workflow", {}).get("specification", {}).get("steps") or []
        ) or len(steps)
        count = {
            s: sum(1 for x in steps if x.get("status") == s)
            for s in ("finished", "running", "failed")
        }
        current = next((x for x in steps if x.get("status") == "running"), None)
        return {
            "total": {"total": total, "job_ids": []},
            "finished": {"total": count["finished"], "job_ids": []},
            "running": {"total": count["running"], "job_ids": []},
            "failed": {"total": count["failed"], "job_ids": []},
            "current_step_name": current.get("name") if current else None,
            "current_command": None,
            "run_started_at": when(w.started),
            "run_finished_at": when(w.finished) if w.status != "stopped" else None,
            "run_stopped_at": when(w.finished) if w.status == "stopped" else None,
        }

    def row(self, w: Workflow, with_size: bool) -> dict[str, Any]:
        assert self.user is not None
        item: dict[str, Any] = {
            "id": w.id,
            "name": w.full_name,
            "status": w.status,
            "created": when(w.created),
            "user": self.user.id,
            "launcher_url": None,
            "progress": self.progress(w),
        }
        if with_size:
            size = size_of(w.workspace)
            item["size"] = {"raw": size, "human_readable": human(size)}
        return item


class Workflows(WorkflowHandler):
    def get(self) -> None:
        assert self.user is not None
        found = self.ctx.store.workflows(self.user)
        wanted = self.get_query_argument("workflow_id_or_name", None)
        if wanted:
            one = self.ctx.store.workflow(self.user, wanted)
            found = [one] if one else []
        if search := self.get_query_argument("search", None):
            found = [w for w in found if search in w.full_name]
        if status := self.get_query_argument("status", None):
            found = [w for w in found if w.status in status.split(",")]
        if self.get_query_argument("type", "batch") == "interactive":
            found = []
        size, page = self.number("size", 0), max(1, self.number("page", 1))
        shown = found[(page - 1) * size : page * size] if size else found
        with_size = self.get_query_argument("include_workspace_size", "false") == "true"
        self.send({"items": [self.row(w, with_size) for w in shown], "total": len(found)})

    def post(self) -> None:
        """Create: a new run number of the name, its workspace seeded from the bundle."""
        assert self.user is not None
        name = self.get_query_argument("workflow_name", "")
        if not NAME.match(name):
            raise refuse(400, f"workflow_name {name!r}: use letters, digits, _ and -")
        bundle = (self.request.files.get("bundle") or [None])[0]
        if bundle is None:
            raise refuse(400, "bundle: upload the specification bundle (a zip with reana.yaml)")
        workflow = self.ctx.store.create_workflow(self.user, name)
        try:
            unpack(bundle["body"], workflow.workspace)
            _check(workflow.workspace / "reana.yaml")
        except Exception:  # refused: as if never created, its run number free again
            self.ctx.store.discard(workflow.id)
            shutil.rmtree(workflow.workspace, ignore_errors=True)
            raise
        self.send(
            {
                "message": "The workflow has been successfully created.",
                "workflow_id": workflow.id,
                "workflow_name": workflow.full_name,
            },
            201,
        )


class Validate(WorkflowHandler):
    """`reana-client validate`: the bundle checked as `create` checks it, nothing kept."""

    def post(self) -> None:
        import tempfile

        from daskstep.workflow.limits import load_limits
        from daskstep.workflow.spec import load_workflow

        bundle = (self.request.files.get("bundle") or [None])[0]
        if bundle is None:
            raise refuse(400, "bundle: upload the specification bundle (a zip with reana.yaml)")
        with tempfile.TemporaryDirectory(dir=self.ctx.store.state) as folder:
            unpack(bundle["body"], Path(folder))
            try:
                _, warnings = load_workflow(str(Path(folder) / "reana.yaml"), load_limits(None))
            except InputError as e:
                errors = [{"code": "invalid", "path": p.path, "message": p.message}
                          for p in e.problems]  # fmt: skip
                self.send({"valid": False, "errors": errors,
                           "warnings": [{"message": str(w)} for w in e.warnings]})  # fmt: skip
                return
        self.send({"valid": True, "errors": [],
                   "warnings": [{"message": str(w)} for w in warnings]})  # fmt: skip


class Specification(WorkflowHandler):
    def get(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        spec = _spec(w.workspace)
        self.send(
            {
                "specification": spec,
                "parameters": (spec.get("inputs") or {}).get("parameters") or {},
            }
        )


class Parameters(WorkflowHandler):
    def get(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        spec = _spec(w.workspace)
        self.send(
            {
                "id": w.id,
                "name": w.full_name,
                "type": spec.get("workflow", {}).get("type"),
                "parameters": (spec.get("inputs") or {}).get("parameters") or {},
            }
        )


class WorkspaceFiles(WorkflowHandler):
    def get(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        rows = []
        for f in workspace_files(w.workspace):
            if (n := self.get_query_argument("file_name", None)) and f["path"] != n:
                continue
            if (s := self.get_query_argument("search", None)) and s not in f["path"]:
                continue
            modified = (w.workspace / f["path"]).stat().st_mtime
            rows.append(
                {
                    "name": f["path"],
                    "last-modified": when(modified),
                    "size": {"raw": f["size"], "human_readable": human(f["size"])},
                }
            )
        self.send({"items": rows, "total": len(rows)})

    def post(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        relative = self.get_query_argument("file_name", "")
        relative = relative.removeprefix("/")  # reana-client names it from the workspace's root
        target = writable_path(w.workspace, relative)
        if target is None:
            raise refuse(400, f"file_name {relative!r}: give a path inside the workspace")
        if len(self.request.body) > MAX_UPLOAD_BYTES:
            raise refuse(400, f"{relative}: larger than 1 GiB")
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            out.write(self.request.body)
        self.send({"message": f"{relative} has been successfully uploaded."})


class WorkspaceFile(WorkflowHandler):
    def get(self, id_or_name: str, relative: str) -> None:
        w = self.workflow(id_or_name)
        path = safe_file(w.workspace, relative)
        if path is None:
            raise refuse(404, f"{relative} does not exist.")
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self.set_header("Content-Type", kind)
        self.set_header("Content-Disposition", f'attachment; filename="{path.name}"')
        self.finish(path.read_bytes())

    def delete(self, id_or_name: str, relative: str) -> None:
        w = self.workflow(id_or_name)
        path = safe_file(w.workspace, relative)
        if path is None:
            self.send({"deleted": {}, "failed": {}})
            return
        size = path.stat().st_size
        path.unlink()
        self.send({"deleted": {relative: {"size": size}}, "failed": {}})


class Start(WorkflowHandler):
    def post(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        if w.status != "created":
            raise refuse(
                409, f"workflow {w.full_name} is already {w.status}, it cannot be started again."
            )
        parameters = self.body_json({}) or {}
        if not isinstance(parameters, dict):
            raise refuse(400, "parameters: give input_parameters and operational_options")
        options = parameters.get("operational_options") or {}
        unknown = sorted(set(options) - IGNORED_OPTIONS) if isinstance(options, dict) else ["?"]
        if unknown:
            raise refuse(400, f"operational_options: daskstep serve runs every step, it does "
                         f"not take {', '.join(unknown)}; start without -o")  # fmt: skip
        given = parameters.get("input_parameters") or {}
        if not isinstance(given, dict):
            raise refuse(400, "input_parameters: give NAME=VALUE pairs (-p NAME=VALUE)")
        _check(w.workspace / "reana.yaml", {str(k): str(v) for k, v in given.items()})
        self.ctx.runs.queue(w, parameters)
        w = self.workflow(w.id)
        self.send(self.submission(w, "Workflow submitted.", w.status))


class Status(WorkflowHandler):
    def get(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        assert self.user is not None
        self.send(
            {
                "id": w.id,
                "name": w.full_name,
                "status": w.status,
                "user": self.user.id,
                "created": when(w.created),
                "logs": "",
                "progress": self.progress(w),
            }
        )

    def put(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        wanted = self.get_query_argument("status", "")
        if wanted == "stop":
            if w.status not in ("queued", "running", "pending"):
                raise refuse(409, f"workflow {w.full_name} is not running")
            self.ctx.runs.stop(w)
            self.send(self.submission(w, "Workflow successfully stopped.", "stopped"))
        elif wanted == "deleted":
            options = self.body_json({}) or {}
            assert self.user is not None
            runs = [w]
            if isinstance(options, dict) and options.get("all_runs"):
                runs = [x for x in self.ctx.store.workflows(self.user) if x.name == w.name]
            going = [x.full_name for x in runs if x.status in ("queued", "running", "pending")]
            if going:
                raise refuse(409, f"workflow {going[0]} is running: stop it first")
            for run in runs:
                self.ctx.store.update(run.id, deleted=1, status="deleted")
                shutil.rmtree(run.workspace, ignore_errors=True)
            self.send(self.submission(w, "Workflow successfully deleted.", "deleted"))
        else:
            raise refuse(400, f"status {wanted!r}: daskstep serve takes stop or deleted")


class Logs(WorkflowHandler):
    def get(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        steps = self.body_json(None)
        steps = [str(s) for s in steps] if isinstance(steps, list) else None
        logs = reana_logs.document(w.workspace, w.id, self.ctx.backend, steps)
        assert self.user is not None
        self.send(
            {
                "workflow_id": w.id,
                "workflow_name": w.full_name,
                "user": self.user.id,
                "logs": logs,
                "live_logs_enabled": False,
            }
        )


class DiskUsage(WorkflowHandler):
    def get(self, id_or_name: str) -> None:
        w = self.workflow(id_or_name)
        assert self.user is not None
        size = size_of(w.workspace)
        self.send(
            {
                "workflow_id": w.id,
                "workflow_name": w.full_name,
                "user": self.user.id,
                "disk_usage_info": [
                    {"name": "", "size": {"raw": size, "human_readable": human(size)}}
                ],
            }
        )


def _check(reana_yaml: Path, parameters: dict[str, str] | None = None) -> None:
    """daskstep's own checks of the specification (and of `-p` parameters over it, as
    `daskstep run -p` checks them): bad input is a 400 naming the field."""
    from daskstep.workflow.limits import load_limits
    from daskstep.workflow.spec import load_workflow

    try:
        load_workflow(str(reana_yaml), load_limits(None), parameters or None)
    except InputError as e:
        raise refuse(400, "; ".join(line.removeprefix("error: ") for line in e.lines())) from None


def _spec(workspace: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load((workspace / "reana.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    if not isinstance(spec, dict):
        return {}
    if "version" in spec:
        spec["version"] = str(spec["version"])
    return spec
