"""`daskstep ui [WORKSPACE...] [--host H] [--port P]`: serve the run pages until Ctrl-C."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daskstep.errors import InputError, Problem
from daskstep.record import STATE

DEFAULT_PORT = 8790  # beside the Dask dashboard's 8787
SEARCH_DEPTH = 3  # how deep under a folder workspaces are looked for


def add_parser(sub: Any) -> None:
    p = sub.add_parser("ui", help="serve the runs' pages: steps, events, live logs, files")
    p.add_argument(
        "workspaces", nargs="*", metavar="WORKSPACE", default=["."],
        help="workspaces, or folders with workspaces under them (default: .)",
    )  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")


def workspaces_in(paths: list[str]) -> list[Path]:
    """Each path that is a workspace (it has run records), else the workspaces under it."""
    found: list[Path] = []
    for given in paths:
        root = Path(given).resolve()
        if not root.is_dir():
            raise InputError([Problem("WORKSPACE", f"{given} is not a folder")])
        if (root / STATE).is_dir():
            found.append(root)
            continue
        for depth in range(1, SEARCH_DEPTH + 1):
            found += sorted(
                p.parent.resolve() for p in root.glob("/".join(["*"] * depth) + f"/{STATE}")
            )
    if not found:
        where = ", ".join(paths)
        raise InputError([Problem("WORKSPACE", f"no runs in {where}: give a workspace of a run")])
    return list(dict.fromkeys(found))


def cmd_ui(args: argparse.Namespace) -> int:
    from daskstep.ui.server import application, new_token

    if not 0 <= args.port <= 65535:
        raise InputError([Problem("--port", f"{args.port} is not a port: use 0 to 65535")])
    workspaces = workspaces_in(args.workspaces)
    token = new_token(args.host)
    import asyncio  # not at import: every daskstep command imports this module

    return asyncio.run(_serve(application(workspaces, token), args.host, args.port, token))


async def _serve(app: Any, host: str, port: int, token: str | None) -> int:
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    try:
        sockets = bind_sockets(port, address=host)
    except OSError as e:
        why = f"cannot listen on {host}:{port}: {e.strerror}"
        raise InputError([Problem("--port", why)]) from None
    server = HTTPServer(app)
    server.add_sockets(sockets)
    bound = sockets[0].getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/" + (f"?token={token}" if token else "")
    if token:
        print(f"daskstep ui: {host} is not loopback: every request needs the token", flush=True)
    print(f"daskstep ui: {url}", flush=True)
    from daskstep.procutil import until_stopped

    await until_stopped()
    server.stop()
    print("daskstep ui: stopped", file=sys.stderr, flush=True)
    return 0
