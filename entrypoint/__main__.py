"""`python3 -m entrypoint [OPTIONS] -- CMD...`: wiring, and the one exit-code table.

Exit codes (docs/architecture.md): the child's own code; 128+n for a child killed by signal n
(or for signal n while still waiting); 64 usage; 69 scheduler unreachable; 70 internal error;
75 too few workers; 78 version mismatch; 124 step timeout.
"""

from __future__ import annotations

import os
import signal
import sys

from entrypoint.core import Entrypointer, EntrypointError, Readiness, Status, UsageError
from entrypoint.lifetime import die_with_parent, parent_pid
from entrypoint.reporter import FileReporter
from entrypoint.runner import ProcessRunner
from entrypoint.versions import VersionCheck
from entrypoint.waiter import SchedulerWaiter, export_tls

TYPE_CHECKING = False  # not `typing`: importing it costs more than this module

if TYPE_CHECKING:
    from entrypoint.core import Waiter
    from entrypoint.health import Health

DEFAULT_TERMINATION_LOG = "/dev/termination-log"
PROG = "daskstep-entrypoint"


class _Parser:  # argparse, imported only for --help and for a usage error's words
    @staticmethod
    def make(prog: str, epilog: str | None):
        import argparse

        class Parser(argparse.ArgumentParser):
            def error(self, message: str) -> "None":  # type: ignore[override]
                raise UsageError(f"{message}; see {self.prog} --help")

        p = Parser(prog=prog, description="Run a step next to a Dask cluster.", epilog=epilog)
        for flag, kind, default, extra in OPTIONS:
            extra = {**extra, "default": default(os.environ)}
            if kind == "flag":
                p.add_argument(flag, action="store_true", **extra)
            elif kind == "list":
                p.add_argument(flag, action="append", **extra)
            else:
                p.add_argument(flag, type={"str": str, "int": int, "float": float}[kind], **extra)
        p.add_argument("command", nargs=argparse.REMAINDER)
        return p


def _env_float(name: str, default: float | None) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else default


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    return int(value) if value else None


def _env_list(name: str) -> list[str]:
    return [f for f in os.environ.get(name, "").split(os.pathsep) if f]


# The options: flag, kind, its default (from the environment), and argparse's extras. One table
# for the two parsers: a quick one for well-formed options (every step starts through it, and
# importing argparse costs more than the rest of the wrapper), and argparse for the rest.
OPTIONS: tuple = (
    ("--scheduler", "str",
     lambda env: env.get("DASKSTEP_SCHEDULER") or env.get("DASK_SCHEDULER_URI")
     or env.get("DASK_SCHEDULER_ADDRESS"), {}),
    ("--tls-dir", "str", lambda env: env.get("DASKSTEP_TLS_DIR"),
     {"help": "the run's TLS folder (ca.pem, client.pem, client-key.pem): exported as the "
      "DASK_DISTRIBUTED__COMM__TLS__* variables for the step"}),
    ("--wait-timeout", "float", lambda env: _env_float("DASKSTEP_WAIT_TIMEOUT", 300.0), {}),
    ("--wait-workers", "int", lambda env: int(env.get("DASKSTEP_WAIT_WORKERS", 0)), {}),
    ("--wait-file", "list", lambda env: _env_list("DASKSTEP_WAIT_FILES"),
     {"metavar": "PATH", "help": "wait until PATH exists and is not empty (repeatable)"}),
    ("--versions", "str", lambda env: env.get("DASKSTEP_VERSIONS", "warn"),
     {"choices": ("off", "warn", "fail")}),
    ("--dashboard", "str", lambda env: env.get("DASKSTEP_DASHBOARD"),
     {"help": "the scheduler's HTTP address, to count workers without distributed"}),
    ("--health-port", "int", lambda env: _env_int("DASKSTEP_HEALTH_PORT"), {}),
    ("--health-host", "str", lambda env: env.get("DASKSTEP_HEALTH_HOST", "0.0.0.0"), {}),
    ("--timeout", "float", lambda env: _env_float("DASKSTEP_TIMEOUT", None), {}),
    ("--grace-period", "float", lambda env: _env_float("DASKSTEP_GRACE_PERIOD", 10.0), {}),
    ("--status-file", "str", lambda env: env.get("DASKSTEP_STATUS_FILE"), {}),
    ("--termination-log", "str", lambda env: env.get("DASKSTEP_TERMINATION_LOG"), {}),
    ("--workdir", "str", lambda env: env.get("DASKSTEP_WORKDIR"), {}),
    ("--die-with-parent", "flag", lambda env: env.get("DASKSTEP_DIE_WITH_PARENT") == "1",
     {"help": "stop the step (or the wait for the scheduler) when the process that started "
      "us dies"}),
    ("--shell", "list", lambda env: [], {"metavar": "CMD"}),
)  # fmt: skip
_KINDS = {flag: kind for flag, kind, _d, _e in OPTIONS}
_CHOICES = {flag: extra["choices"] for flag, _k, _d, extra in OPTIONS if "choices" in extra}


class StepGate:
    """The waiter the loop sees: the scheduler answers, versions agree, then we are ready."""

    def __init__(self, waiter: Waiter, versions: VersionCheck, health: Health | None) -> None:
        self.waiter, self.versions, self.health = waiter, versions, health

    def wait(self) -> Readiness:
        ready = self.waiter.wait()
        self.versions.check(ready.scheduler)
        if self.health is not None:
            self.health.ready = True
        return ready


class Options:
    """What the options say (argparse's Namespace, without importing argparse)."""

    def __init__(self, **values: object) -> None:
        self.__dict__.update(values)


def _defaults() -> dict[str, object]:
    return {flag[2:].replace("-", "_"): default(os.environ) for flag, _k, default, _e in OPTIONS}


def _quick(argv: list[str]) -> Options | None:
    """The options when every one is well formed; None for anything argparse must judge
    (help, an unknown or abbreviated option, a missing or bad value)."""
    values = _defaults()
    command: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--" or not arg.startswith("-"):
            command = argv[i:]
            break
        flag, eq, value = arg.partition("=")
        kind = _KINDS.get(flag)
        if kind is None or (kind == "flag" and eq):
            return None
        dest = flag[2:].replace("-", "_")
        if kind == "flag":
            values[dest] = True
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                return None
            value = argv[i + 1]
        if value.startswith("-"):  # an option, a negative number, "--": argparse's to judge
            return None
        i += 1 if eq else 2
        try:
            converted = {"int": int, "float": float}.get(kind, str)(value)
        except ValueError:
            return None
        if converted not in _CHOICES.get(flag, (converted,)):
            return None
        if kind == "list":  # given on the command line: added to the environment's
            values[dest] = [*values[dest], value]  # type: ignore[list-item]
        else:
            values[dest] = converted
    return Options(**values, command=command)


def parse(argv: list[str], prog: str = PROG, epilog: str | None = None) -> Options:
    """The options; `prog` and `epilog` let a program that embeds the entrypoint name itself
    in the usage and add a word about its own commands."""
    args = _quick(argv)
    if args is None:
        args = Options(**vars(_Parser.make(prog, epilog).parse_args(argv)))
    if args.command and args.command[0] == "--":
        args.command = args.command[1:]
    if bool(args.shell) == bool(args.command):
        raise UsageError("give the step as --shell CMD (repeatable) or as -- CMD...")
    if args.termination_log is None and os.access(DEFAULT_TERMINATION_LOG, os.W_OK):
        args.termination_log = DEFAULT_TERMINATION_LOG
    return args


def main(argv: list[str] | None = None, prog: str = PROG, epilog: str | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    status_file = _status_file_in(argv) or os.environ.get("DASKSTEP_STATUS_FILE")
    try:
        args = parse(argv, prog, epilog)
        status_file = args.status_file
        commands = [["sh", "-c", c] for c in args.shell] or [args.command]
        if args.tls_dir:
            export_tls(args.tls_dir)
        health = None
        if args.health_port is not None:
            from entrypoint.health import Health

            health = Health()
            health.serve(args.health_port, args.health_host)
        if args.die_with_parent:  # before the wait: the parent may die while we wait
            die_with_parent(signal.SIGTERM, expected_parent=parent_pid())
        waiter = SchedulerWaiter(
            args.scheduler, args.wait_timeout, args.wait_workers, args.wait_file, args.dashboard
        )
        entry = Entrypointer(
            waiter=StepGate(waiter, VersionCheck(args.versions, log=_log), health),
            runner=ProcessRunner(
                timeout=args.timeout,
                grace_period=args.grace_period,
                cwd=args.workdir,
                watch_parent=args.die_with_parent,
            ),
            reporter=FileReporter(args.status_file, args.termination_log),
        )
        return entry.go(commands, dict(os.environ))
    except EntrypointError as e:
        # A failure before the loop started (bad usage): still leave a status behind.
        print(f"error: {prog}: {e}", file=sys.stderr)
        _write_early_status(status_file, e.reason, e.exit_code, str(e))
        return e.exit_code
    except Exception as e:
        print(f"error: {prog}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return 70


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _status_file_in(argv: list[str]) -> str | None:
    """Found before parsing, so that even a usage error leaves a status behind."""
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg == "--status-file" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--status-file="):
            return arg.split("=", 1)[1]
    return None


def _write_early_status(path: str | None, reason: str, code: int, message: str) -> None:
    import time

    now = time.time()
    FileReporter(path, None).write(Status(reason, code, now, now, message=message))


if __name__ == "__main__":
    sys.exit(main())
