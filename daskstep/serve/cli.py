"""`daskstep serve [--workspaces DIR] [--host H] [--port N] [--backend B] [--max-runs N]`, and
`daskstep serve approve CODE --user EMAIL` (the local approval of a `reana-client login`).

HTTPS only, with the server's own CA, made once in the state folder and printed at the start
for `REANA_SERVER_CA_CERTS`; on 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from daskstep.errors import InputError, Problem

DEFAULT_PORT = 30443
TICK_MS = 500


def add_parser(sub: Any) -> None:
    from daskstep.backends.registry import names as backend_names

    p = sub.add_parser("serve", help="REANA's REST API for reana-client, running on daskstep")
    p.add_argument("action", nargs="?", choices=("approve",), help="approve CODE: a login")
    p.add_argument("code", nargs="?", metavar="CODE", help="with approve: the login's code")
    p.add_argument("--user", metavar="EMAIL", help="with approve: who logs in")
    p.add_argument(
        "--workspaces",
        metavar="DIR",
        default="daskstep-workspaces",
        help="the workspaces and the server's state (default: ./daskstep-workspaces)",
    )
    p.add_argument("--host", default="127.0.0.1", help="default: 127.0.0.1 (this machine only)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default: {DEFAULT_PORT}")
    p.add_argument("--backend", choices=backend_names(), default="local")
    p.add_argument("--max-runs", type=int, default=2, metavar="N",
                   help="runs at a time; the rest wait in a queue (default 2)")  # fmt: skip


def cmd_serve(args: argparse.Namespace) -> int:
    from daskstep.extras import require_extra

    require_extra("serve", "serve", "daskstep serve")
    if args.action == "approve":
        return _approve(args)
    if not 0 <= args.port <= 65535:
        raise InputError([Problem("--port", f"{args.port} is not a port: use 0 to 65535")])
    if args.max_runs < 1:
        raise InputError([Problem("--max-runs", f"{args.max_runs}: give 1 or more")])
    import asyncio  # not at import: every daskstep command imports this module

    return asyncio.run(_serve(args))


def _approve(args: argparse.Namespace) -> int:
    from daskstep.serve.store import Store

    if not args.code or not args.user or "@" not in args.user:
        raise InputError([Problem("approve", "give the code and --user EMAIL: daskstep serve "
                                  "approve ABCD-EFGH --user you@example.org")])  # fmt: skip
    store = Store(Path(args.workspaces).resolve())
    user = store.user_by_email(args.user, create=True)
    assert user is not None
    if not store.approve(args.code, user):
        raise InputError([Problem("CODE", f"{args.code} is no pending login here: run "
                                  "reana-client login --headless again")])  # fmt: skip
    print(f"daskstep serve: approved {args.code.upper()} for {user.email}")
    return 0


def server_tls(state: Path, host: str) -> Any:
    """The server's certificate from its own CA, which is made once and kept: the clients keep
    trusting it when the certificate is made anew (near its end, or for another --host)."""
    import ssl

    from daskstep.tls import ServerTLS

    tls = ServerTLS(state / "tls")
    tls.ensure(host)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    return context, tls.ca


def application(ctx: Any) -> Any:
    import tornado.web

    from daskstep.serve import api, browser_login, workflows

    wf = r"/api/workflows/([^/]+)"
    routes = [
        (r"/api/ping", api.Ping), (r"/api/you", api.You), (r"/api/info", api.Info),
        (r"/api/secrets/?", api.Secrets),
        (r"/api/\.well-known/openid-configuration", api.Discovery),
        (r"/oauth/jwks", api.Keys), (r"/oauth/(token|device)", api.OAuth),
        (r"/device", api.DevicePage), (r"/oauth/authorize", browser_login.Authorize),
        (r"/api/workflows", workflows.Workflows),
        (r"/api/workflows/validate", workflows.Validate),
        (wf + r"/specification", workflows.Specification),
        (wf + r"/parameters", workflows.Parameters),
        (wf + r"/workspace", workflows.WorkspaceFiles),
        (wf + r"/workspace/(.+)", workflows.WorkspaceFile),
        (wf + r"/start", workflows.Start), (wf + r"/status", workflows.Status),
        (wf + r"/logs", workflows.Logs), (wf + r"/disk_usage", workflows.DiskUsage),
    ]  # fmt: skip
    return tornado.web.Application(
        [(path, handler, {"ctx": ctx}) for path, handler in routes],
        default_handler_class=api.Unsupported, default_handler_args={"ctx": ctx},
        max_body_size=1 << 30,
    )  # fmt: skip


async def _serve(args: argparse.Namespace) -> int:
    from importlib.metadata import version

    from tornado.httpserver import HTTPServer
    from tornado.ioloop import PeriodicCallback
    from tornado.netutil import bind_sockets

    from daskstep.serve.api import Context
    from daskstep.serve.issuer import Issuer
    from daskstep.serve.runs import Runs
    from daskstep.serve.store import Store

    root = Path(args.workspaces).resolve()
    store = Store(root)
    try:
        sockets = bind_sockets(args.port, address=args.host)
    except OSError as e:
        raise InputError([Problem("--port", f"cannot listen on {args.host}:{args.port}: "
                                  f"{e.strerror}")]) from None  # fmt: skip
    port = sockets[0].getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    url = f"https://{shown}:{port}"
    ssl_context, ca = server_tls(store.state, args.host)
    issuer = Issuer(store, url)

    def secrets_of(user_id: str) -> Path | None:
        folder = ctx.secrets_folder(user_id)
        return folder if folder.is_dir() else None

    runs = Runs(store, args.backend, args.max_runs, secrets_of)
    ctx = Context(store, issuer, runs, args.backend, f"0.95.0 (daskstep {version('daskstep')})")
    for name in runs.recover():
        print(f"daskstep serve: {name} was running when the server stopped: marked failed",
              flush=True)  # fmt: skip
    server = HTTPServer(application(ctx), ssl_options=ssl_context, xheaders=False)
    server.add_sockets(sockets)
    ticker = PeriodicCallback(runs.tick, TICK_MS)
    ticker.start()
    print(f"daskstep serve: {url} (workspaces in {root}, backend {args.backend})", flush=True)
    print(f"daskstep serve: export REANA_SERVER_CA_CERTS={ca}", flush=True)
    print(f"daskstep serve: reana-client login --server {url} --headless, then "
          "daskstep serve approve CODE --user EMAIL", flush=True)  # fmt: skip
    from daskstep.procutil import until_stopped

    await until_stopped()
    ticker.stop()
    server.stop()
    runs.close()
    print("daskstep serve: stopped", file=sys.stderr, flush=True)
    return 0
