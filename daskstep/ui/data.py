"""What `daskstep ui` shows, read from what the runs leave: status.json (record.py), the log
store (sidecar/store.py) and the workspace's files. The same records `daskstep list`, `status`
and `logs` read, so a page starts nothing and changes nothing, during a run as after it.

A log is read by sequence number from its index, newest first and a page at a time: a run
with a million lines costs a page's bytes, not the file's.
"""

from __future__ import annotations

import mimetypes
import mmap
import os
from pathlib import Path
from typing import Any

from daskstep.record import STATE, RunFolder, Workspace, read_status
from daskstep.runs_view import summary
from sidecar.store import read_lines, total_lines

PAGE_LINES = 200  # a log page
MAX_PAGE_LINES = 2000
MAX_FILES = 500  # the files tab lists no more
IMAGES = (".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp")
SECRET_NAMES = {"CERN_USER", "CERN_KEYTAB", "VOMSPROXY_FILE", "VOMSPROXY_PASS", "VONAME"}
SECRET_PREFIXES = ("x509up_", "krb5cc", "userkey", "hostkey")
SECRET_SUFFIXES = (".keytab", ".key", ".pem", ".p12", ".pfx")


def run_row(index: int, run: RunFolder, doc: dict[str, Any] | None = None) -> dict[str, Any]:
    """One run's line in the list: `daskstep list`'s, and the workflow, step k/n and where."""
    doc = read_status(run) if doc is None else doc
    steps = doc.get("steps") if isinstance(doc.get("steps"), list) else []
    done = sum(1 for s in steps if isinstance(s, dict) and s.get("status") == "finished")
    workflow = str(doc.get("workflow") or run.workspace / "reana.yaml")
    return {
        **summary(run, doc),
        "workspace": index,
        "where": str(run.workspace),
        "name": Path(workflow).parent.name or str(run.workspace),
        "steps": f"{done}/{len(steps)}",
        "report": run.report_html.is_file(),
    }


def runs(workspaces: list[Workspace]) -> list[dict[str, Any]]:
    """Every run of every workspace, newest first (by start, then number)."""
    rows = [run_row(i, run) for i, ws in enumerate(workspaces) for run in ws.recorded()]
    return sorted(rows, key=lambda r: (str(r.get("started_at") or ""), r["run"]), reverse=True)


def run_detail(workspace: Workspace, index: int, number: int) -> dict[str, Any] | None:
    """A run's page: its status.json (steps, events, cluster), its logs, whether it has a
    report; the dashboard only while the run lives."""
    if number not in workspace.numbers():
        return None
    run = workspace.run_folder(number)
    doc = read_status(run)
    cluster = doc.get("cluster") if isinstance(doc.get("cluster"), dict) else {}
    live = doc.get("status") in ("pending", "running")
    return {
        **run_row(index, run, doc),
        "message": doc.get("message"),
        "steps": doc.get("steps") if isinstance(doc.get("steps"), list) else [],
        "events": doc.get("events") if isinstance(doc.get("events"), list) else [],
        "cluster": {k: v for k, v in cluster.items() if k != "dashboard"},
        "dashboard": cluster.get("dashboard") if live else None,
        "report": run.report_html.is_file(),
        "streams": streams(run),
    }


def streams(run: RunFolder) -> list[str]:
    """The run's log streams by name: job, engine, scheduler, all the workers, each worker."""
    names = [c for c in ("job", "engine", "scheduler") if (run.logs / f"{c}.log").exists()]
    workers = sorted(f"worker:{p.stem}" for p in (run.logs / "workers").glob("*.log"))
    return names + (["workers"] if workers else []) + workers


def worker_paths(run: RunFolder) -> dict[str, Path]:
    return {p.stem: p for p in sorted((run.logs / "workers").glob("*.log"))}


def merged_page(
    paths: dict[str, Path],
    before: dict[str, int] | None = None,
    after: dict[str, int] | None = None,
    limit: int = PAGE_LINES,
) -> dict[str, Any]:
    """Several streams as one (all the workers), by time: each line says its stream. The
    cursors are per stream: `before` for the next older page, `after` for following."""
    limit = max(1, min(limit, MAX_PAGE_LINES))
    if after is not None:  # a worker not in the cursor yet is read from its start
        pages = {n: log_page(p, after=after.get(n, 0), limit=limit) for n, p in paths.items()}
    else:
        pages = {
            n: log_page(p, before=(before or {}).get(n), limit=limit) for n, p in paths.items()
        }
    lines = [{**line, "stream": name} for name, page in pages.items() for line in page["lines"]]
    lines.sort(key=lambda line: (line["ts"], line["stream"], line["seq"]), reverse=after is None)
    lines = lines[:limit]
    totals = {name: page["total"] for name, page in pages.items()}
    if after is not None:
        cursor = {name: after.get(name, 0) for name in paths}
        for line in lines:
            cursor[line["stream"]] = max(cursor[line["stream"]], line["seq"])
        return {"lines": lines, "after": cursor, "total": sum(totals.values())}
    cursor = {name: (before or {}).get(name, totals[name] + 1) for name in paths}
    for line in lines:
        cursor[line["stream"]] = min(cursor[line["stream"]], line["seq"])
    older = {name: seq for name, seq in cursor.items() if seq > 1}
    return {"lines": lines, "before": older or None, "total": sum(totals.values()),
            "after": {name: totals[name] for name in paths}}  # fmt: skip


def stream_path(run: RunFolder, name: str) -> Path | None:
    """`job`, `engine`, `scheduler` or `worker:NAME` of this run; None for anything else."""
    if name not in ("job", "engine", "scheduler") and (name not in streams(run) or ":" not in name):
        return None  # the job's, the engine's and the scheduler's may not be there yet
    component, _, worker = name.partition(":")
    return run.logs / "workers" / f"{worker}.log" if worker else run.logs / f"{component}.log"


def log_page(
    path: Path, before: int | None = None, after: int | None = None, limit: int = PAGE_LINES
) -> dict[str, Any]:
    """Lines of one stream by sequence number: the newest `limit` before `before` (newest
    first), or the oldest `limit` after `after` (oldest first, for following). `total` is how
    many lines the stream has now; `before` the number to ask for the next older page."""
    limit = max(1, min(limit, MAX_PAGE_LINES))
    total = total_lines(path)
    if after is not None:
        first, last = after + 1, min(total, after + limit)
    else:
        last = min(total, before - 1) if before is not None else total
        first = max(1, last - limit + 1)
    if first > last:
        return {"lines": [], "total": total, "before": None}
    lines = []
    for line in read_lines(path, since=first - 1):
        if line.seq > last:
            break
        lines.append({"seq": line.seq, "ts": line.timestamp_ns, "text": line.text(),
                      "partial": line.partial})  # fmt: skip
    if after is None:
        lines.reverse()
    return {"lines": lines, "total": total, "before": first if first > 1 else None}


def step_start(path: Path, name: str, number: int, of: int) -> int | None:
    """The line number of `daskstep: step NAME (k/n) started` in the job's log: where the
    step's lines begin. One pass over the bytes (a search, then a count of the newlines
    before it, a slice at a time): asked for when a user opens a step, not on every poll."""
    needle = f"daskstep: step {name} ({number}/{of}) started\n".encode()
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            at = mm.find(needle)
            if at < 0 or (at > 0 and mm[at - 1 : at] != b"\n"):
                return None
            newlines = sum(
                mm[i : min(at, i + (8 << 20))].count(b"\n") for i in range(0, at, 8 << 20)
            )
    except (OSError, ValueError):  # no log yet, or an empty one (mmap refuses those)
        return None
    return newlines + 1


# -- the workspace's files -------------------------------------------------------------------


def safe_file(root: Path, relative: str) -> Path | None:
    """The workspace file at `relative`, or None: absolute paths, `..`, anything that
    resolves (through symlinks) outside the workspace, and the run records (`.daskstep`,
    where the run's TLS and credentials live) are refused alike."""
    if not relative or "\0" in relative or relative.startswith(("/", "\\")):
        return None
    parts = Path(relative).parts
    if not parts or any(p in ("..", "") for p in parts) or parts[0] == STATE:
        return None
    real_root = root.resolve()
    try:
        target = (real_root / relative).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    inside = target.relative_to(real_root).parts if target.is_relative_to(real_root) else None
    if not inside or inside[0] == STATE or not target.is_file() or secret(target):
        return None
    return target


def secret(path: Path) -> bool:
    """A credential, wherever a user put it: REANA's secret names, keys, keytabs, proxies and
    ticket caches, and anything in a folder holding REANA's secrets (a `--secrets` folder
    inside the workspace)."""
    name = path.name
    if name in SECRET_NAMES or name.startswith(SECRET_PREFIXES) or name.endswith(SECRET_SUFFIXES):
        return True
    return any((path.parent / marker).exists() for marker in ("CERN_KEYTAB", "VOMSPROXY_PASS"))


def files(root: Path, outputs: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """The workspace's files (not its run records), outputs first, then images, then by name."""
    real_root = root.resolve()
    found = []
    for folder, dirs, names in os.walk(real_root):
        dirs[:] = sorted(d for d in dirs if not (Path(folder) == real_root and d == STATE))
        for name in sorted(names):
            relative = str((Path(folder) / name).relative_to(real_root))
            if safe_file(real_root, relative) is None:
                continue
            found.append(relative)
            if len(found) >= MAX_FILES:
                break
    wanted = set(outputs)

    def rank(relative: str) -> tuple[int, str]:
        output = relative in wanted or any(relative.startswith(f"{o}/") for o in wanted)
        return (0 if output else 1 if relative.lower().endswith(IMAGES) else 2, relative)

    rows = []
    for relative in sorted(found, key=rank):
        kind = mimetypes.guess_type(relative)[0] or "application/octet-stream"
        size = (real_root / relative).stat().st_size
        rows.append({"path": relative, "size": size, "type": kind,
                     "output": rank(relative)[0] == 0,
                     "image": relative.lower().endswith(IMAGES)})  # fmt: skip
    return rows
