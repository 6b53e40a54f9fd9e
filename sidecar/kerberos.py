"""`daskstep sidecar kerberos`: keep a Kerberos ticket cache valid for the whole run.

REANA's sidecar only runs `kinit -R`, so it dies once renew-till passes. This one gets a ticket from
the keytab, renews it while renewing still extends its life, and falls back to a fresh `kinit -kt`
when renewal fails or renew-till is near. The MIT tools do the Kerberos work; only options and paths
reach their argv, never key material.

Readers (the step's entrypoint `--wait-file`s the cache, workers use it through KRB5CCNAME) must
never see a half-written cache, so every write goes to a temporary cache in the same folder, is
checked with `klist -s`, and is then renamed over the target (mode 0600).

Exit codes: 0 when stopped (SIGTERM, SIGINT, --stop-file); 2 for bad input (missing keytab, wrong
principal, bad option); 69 when the KDC stays unreachable past the deadline; 1 for other failures.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tenacity import (
    RetryCallState,
    RetryError,
    Retrying,
    retry_if_exception_type,
    stop_after_delay,
    wait_exponential,
)

from sidecar.krb5tools import (
    EXIT_FAILED,
    BadInput,
    KdcUnreachable,
    KerberosError,
    RenewFailed,
    Ticket,
    classify_kinit_error,
    first_line,
    parse_klist,
    when,
)
from sidecar.lifecycle import (
    StopSignal,
    add_remove_on_exit,
    exit_after_stop,
    follow_run,
    remove_files,
)

PREFIX = "kerberos sidecar"
TOOL_TIMEOUT = 60.0  # one kinit/klist call; MIT's own KDC timeouts are shorter

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class Stopped(Exception):
    """A stop was asked for while waiting or while a tool ran."""


def parse_duration(text: str) -> float:
    """Seconds from '90', '15s', '10h', '7d' or '1h30m' (the kinit forms we accept)."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+)([smhd])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 90s, 10h or 7d")
    return float(sum(int(n) * _UNITS[u] for n, u in parts))


class Sidecar:
    def __init__(self, args: argparse.Namespace) -> None:
        self.keytab = str(args.keytab)
        self.principal = args.principal
        self.realm = self.principal.rpartition("@")[2] or None
        self.ccache = Path(args.ccache).absolute()
        self.lifetime = args.lifetime
        self.renew_lifetime = args.renew_lifetime
        self.ready_file = Path(args.ready_file) if args.ready_file else None
        self.interval = args.check_interval
        self.kdc_deadline = args.kdc_deadline
        self.kinit = args.kinit
        self.klist = args.klist
        self.stop = StopSignal(args.stop_file)
        self.ticket_life: float | None = None  # lifetime of the last fresh ticket

    # -- stopping -------------------------------------------------------------------------------
    def stopping(self) -> bool:
        return self.stop.is_set()

    def sleep(self, seconds: float) -> None:
        """Sleep, waking at once on a signal and within 0.2 s of the stop file."""
        if self.stop.wait(seconds):
            raise Stopped

    # -- tools ----------------------------------------------------------------------------------
    def run(self, argv: list[str], locale_c: bool = False) -> subprocess.CompletedProcess[str]:
        """Run a MIT tool (environment passed through, so KRB5_CONFIG holds); stoppable."""
        env = dict(os.environ, LC_ALL="C") if locale_c else None
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
        except OSError as e:
            raise KerberosError(f"cannot run {argv[0]}: {e.strerror}") from None
        deadline = time.monotonic() + TOOL_TIMEOUT
        while True:
            try:
                out, err = proc.communicate(timeout=0.2)
                return subprocess.CompletedProcess(argv, proc.returncode, out, err)
            except subprocess.TimeoutExpired:
                if self.stopping() or time.monotonic() > deadline:
                    proc.kill()
                    proc.communicate()
                    if self.stop.is_set():
                        raise Stopped from None
                    message = f"{argv[0]} did not finish in {TOOL_TIMEOUT:.0f}s"
                    raise KerberosError(message) from None

    def read_ticket(self, cache: Path) -> Ticket | None:
        """The cache's TGT when `klist -s` calls it valid, else None."""
        if self.run([self.klist, "-s", "-c", f"FILE:{cache}"]).returncode != 0:
            return None
        proc = self.run([self.klist, "-c", f"FILE:{cache}"], locale_c=True)
        if proc.returncode != 0:
            return None
        try:
            return parse_klist(proc.stdout, self.realm)
        except ValueError:
            return None

    # -- writing the cache ----------------------------------------------------------------------
    def temp_cache(self) -> Path:
        return self.ccache.with_name(f".{self.ccache.name}.{os.getpid()}.{secrets.token_hex(4)}")

    def install(self, tmp: Path) -> Ticket:
        """Check the temporary cache, then rename it over the target: readers see all or nothing."""
        os.chmod(tmp, 0o600)
        ticket = self.read_ticket(tmp)
        if ticket is None:
            raise KerberosError(f"kinit wrote no valid ticket into {tmp}")
        os.replace(tmp, self.ccache)
        return ticket

    def kinit_keytab(self) -> Ticket:
        """A fresh ticket from the keytab (no retry here)."""
        if not os.path.isfile(self.keytab):
            raise BadInput(f"keytab {self.keytab} is missing (give --keytab an existing file)")
        if not os.access(self.keytab, os.R_OK):
            raise BadInput(f"keytab {self.keytab} is not readable by uid {os.getuid()}")
        tmp = self.temp_cache()
        argv = [self.kinit, "-kt", self.keytab, "-c", f"FILE:{tmp}"]
        if self.lifetime is not None:
            argv += ["-l", f"{int(self.lifetime)}s"]
        if self.renew_lifetime is not None:
            argv += ["-r", f"{int(self.renew_lifetime)}s"]
        try:
            proc = self.run(argv + [self.principal])
            if proc.returncode != 0:
                raise classify_kinit_error(proc.stderr, self.keytab, self.principal)
            ticket = self.install(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        self.ticket_life = ticket.end - ticket.start
        return ticket

    def kinit_renew(self) -> Ticket:
        """Renew a copy of the cache, then rename it over the target."""
        tmp = self.temp_cache()
        try:
            data = self.ccache.read_bytes()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            proc = self.run([self.kinit, "-R", "-c", f"FILE:{tmp}"])
            if proc.returncode != 0:
                line = first_line(proc.stderr)
                if "cannot contact any kdc" in line.lower():
                    realm = self.realm or "(default realm)"
                    raise KdcUnreachable(f"cannot reach the KDC for realm {realm}: {line}")
                raise RenewFailed(f"renewal failed: {line}")
            return self.install(tmp)
        except OSError as e:
            raise RenewFailed(f"renewal failed: {e.strerror}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def with_retry(self, action: Any, deadline: float) -> Ticket:
        """Retry an unreachable KDC with exponential backoff until `deadline` seconds pass."""
        backoff = wait_exponential(multiplier=0.5, min=0.5, max=30)

        def wait(state: RetryCallState) -> float:
            # the last attempt falls on the deadline, not a whole backoff step after it
            return min(backoff(state), max(0.0, deadline - (state.seconds_since_start or 0.0)))

        retrying = Retrying(
            retry=retry_if_exception_type(KdcUnreachable),
            wait=wait,
            stop=stop_after_delay(deadline),
            sleep=self.sleep,
            before_sleep=self.log_retry,
            reraise=True,
        )
        try:
            return retrying(action)
        except RetryError as e:  # only without reraise; kept for safety
            raise e.last_attempt.exception() or KerberosError("retry failed") from None

    def log_retry(self, state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome else None
        wait = state.next_action.sleep if state.next_action else 0.0
        print(f"{PREFIX}: failed: {error}; retry {state.attempt_number} in {wait:.1f}s", flush=True)

    # -- the loop -------------------------------------------------------------------------------
    def log(self, event: str, ticket: Ticket) -> None:
        print(
            f"{PREFIX}: {event} ticket for {ticket.principal or self.principal}, "
            f"expires {when(ticket.end)}, renewable until {when(ticket.renew_till)}",
            flush=True,
        )

    def refresh(self, ticket: Ticket) -> Ticket:
        """Renew when that still extends the life; else (or when renewal fails) kinit again."""
        life = self.ticket_life or (ticket.end - ticket.start)
        now = time.time()
        deadline = max(self.kdc_deadline, ticket.end - now)
        if ticket.renew_till is not None and ticket.renew_till - now > life / 2:
            try:
                new = self.with_retry(self.kinit_renew, deadline)
                self.log("renewed", new)
                return new
            except RenewFailed as e:
                print(f"{PREFIX}: {e}; getting a fresh ticket from the keytab", flush=True)
        new = self.with_retry(self.kinit_keytab, deadline)
        self.log("re-obtained", new)
        return new

    def needs_refresh(self, ticket: Ticket | None) -> bool:
        if ticket is None:
            return True
        life = self.ticket_life or (ticket.end - ticket.start)
        return ticket.end - time.time() < life / 2

    def serve(self) -> int:
        folder = self.ccache.parent
        created = not folder.is_dir()
        if created:
            folder.mkdir(mode=0o700, parents=True)
        try:
            ticket = self.with_retry(self.kinit_keytab, self.kdc_deadline)
        except BaseException:
            if created:  # leave nothing half-started behind
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        self.log("obtained", ticket)
        if self.ready_file is not None:
            self.ready_file.parent.mkdir(parents=True, exist_ok=True)
            self.ready_file.touch()
        print(f"{PREFIX}: ready, cache {self.ccache}", flush=True)
        while True:
            self.sleep(self.next_check(ticket))
            current = self.read_ticket(self.ccache) if self.ccache.exists() else None
            if current is None:
                print(f"{PREFIX}: cache {self.ccache} holds no valid ticket", flush=True)
            if self.needs_refresh(current):
                ticket = self.refresh(current or ticket)
            elif current is not None:
                ticket = current

    def next_check(self, ticket: Ticket) -> float:
        """Wake at the half-life point at the latest: a 1-minute ticket cannot wait 30 s."""
        life = self.ticket_life or (ticket.end - ticket.start)
        return max(0.5, min(self.interval, ticket.end - life / 2 - time.time()))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="daskstep sidecar kerberos",
        description="Keep a Kerberos ticket cache valid from a keytab: renew, re-kinit, retry.",
    )
    p.add_argument("--keytab", required=True, help="keytab file (read by kinit only)")
    p.add_argument("--principal", required=True, help="e.g. alice@CERN.CH")
    p.add_argument("--ccache", required=True, help="ticket cache file to keep valid (0600)")
    p.add_argument("--lifetime", type=parse_duration, default=None, help="kinit -l, e.g. 10h")
    p.add_argument("--renew-lifetime", type=parse_duration, default=None, help="kinit -r, e.g. 7d")
    p.add_argument("--stop-file", help="exit 0 once this file appears")
    p.add_argument("--ready-file", help="touched once the cache holds a valid ticket")
    p.add_argument("--check-interval", type=parse_duration, default=30.0, help="seconds")
    p.add_argument(
        "--kdc-deadline",
        type=parse_duration,
        default=300.0,
        help="give up when the KDC stays unreachable this long (default 5m)",
    )
    add_remove_on_exit(p, "cache")
    p.add_argument("--kinit", default="kinit", help="MIT kinit binary")
    p.add_argument("--klist", default="klist", help="MIT klist binary")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.umask(0o077)  # every file we make (temp caches, folders) is private from the start
    sidecar = Sidecar(args)
    sidecar.stop.install()
    follow_run()
    try:
        return _serve(sidecar)
    finally:
        remove_files(args.remove_on_exit)


def _serve(sidecar: Sidecar) -> int:
    try:
        return sidecar.serve()
    except Stopped:
        print(f"{PREFIX}: stopped", flush=True)
        return 0
    except KerberosError as e:
        print(f"{PREFIX}: {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except OSError as e:
        print(f"{PREFIX}: {e.filename or ''}: {e.strerror}", file=sys.stderr, flush=True)
        return EXIT_FAILED


if __name__ == "__main__":
    exit_after_stop(main())
