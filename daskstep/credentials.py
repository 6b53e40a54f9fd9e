"""The credential sidecars of a run: Kerberos tickets and VOMS proxies for the workers and steps.

Secrets come under REANA's names, from a folder laid out like REANA's secrets mount
(`/etc/reana/secrets`, one file per secret); the small non-secret values may also come from the
environment, as REANA exports them. The sidecars are started before the cluster and must produce
a valid credential first, so that a bad keytab or passphrase fails the run in seconds instead of
failing every Dask task later. Their files live in a private folder (0700) outside the
workspace, which REANA lets users download, and are removed when the run ends.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from daskstep.errors import Cancelled, DaskstepError, InputError, Problem
from daskstep.leftovers import private_folder
from daskstep.progress import say
from daskstep.reaper import Reaper
from daskstep.secret_env import child_env
from daskstep.tls import RunTLS
from sidecar.lifecycle import StopSignal

SECRETS_ENV = "DASKSTEP_SECRETS"
VOMS_VALID_ENV = "DASKSTEP_VOMS_VALID"  # HH:MM asked of voms-proxy-init; renewed before its end
REANA_SECRETS = Path("/etc/reana/secrets")
READY_TIMEOUT = 330.0  # the Kerberos sidecar's own KDC deadline (300 s) plus margin
STOP_TIMEOUT = 10.0


class CredentialError(DaskstepError):
    """A sidecar could not obtain its credential; the message is the sidecar's own line."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class Sidecar:
    """How to start one credential sidecar and what it gives the workers and steps."""

    kind: str  # kerberos or voms
    variable: str  # KRB5CCNAME or X509_USER_PROXY
    path: Path  # the credential file, kept valid by the sidecar
    argv: list[str]
    value: str  # the variable's value
    stdin_secret: bytes | None = None  # the passphrase, through a pipe
    copies: tuple[tuple[Path, Path], ...] = ()  # (secret, private copy 0600) made at start
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    ready_file: Path | None = None
    log: Path | None = None
    # the sidecar's words for things, and the user's: it only knows options and private copies
    words: tuple[tuple[str, str], ...] = ()


class Secrets:
    """REANA-named secrets: files in `folder`, small values also from the environment."""

    def __init__(self, folder: Path | None, env: Mapping[str, str]) -> None:
        self.folder = folder
        self.env = env

    @classmethod
    def locate(cls, option: str | None, env: Mapping[str, str]) -> Secrets:
        """The folder the user named (which must exist, needed or not), else REANA's mount."""
        named = ("--secrets", option) if option else (SECRETS_ENV, env.get(SECRETS_ENV))
        if named[1]:
            folder = Path(named[1])
            if not folder.is_dir():
                message = f"{folder} is not a folder; give the secrets folder"
                raise InputError([Problem(named[0], message)])
            return cls(folder, dict(env))
        return cls(REANA_SECRETS if REANA_SECRETS.is_dir() else None, dict(env))

    def where(self) -> str:
        return str(self.folder) if self.folder else "--secrets DIR"

    def file(self, name: str) -> Path | None:
        if self.folder is None or not name or "/" in name:
            return None
        path = self.folder / name
        return path if path.is_file() else None

    def value(self, name: str) -> str | None:
        path = self.file(name)
        if path is not None:
            return path.read_text(errors="replace").strip() or None
        return self.env.get(name, "").strip() or None


def _python_m(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def plan(kerberos: bool, voms_proxy: bool, secrets: Secrets, folder: Path) -> list[Sidecar]:
    """The sidecars the workflow asks for, or InputError naming every missing secret."""
    problems: list[Problem] = []
    sidecars: list[Sidecar] = []
    if kerberos:
        sidecars += _kerberos(secrets, folder, problems)
    if voms_proxy:
        sidecars += _voms(secrets, folder, problems)
    if problems:
        raise InputError(problems)
    return sidecars


def _kerberos(secrets: Secrets, folder: Path, problems: list[Problem]) -> list[Sidecar]:
    where = secrets.where()
    user = secrets.value("CERN_USER")
    keytab_name = secrets.value("CERN_KEYTAB")
    if user is None:
        problems.append(
            Problem(
                "secrets.CERN_USER",
                f"missing for workflow.resources.kerberos; put the Kerberos user "
                f"(alice, or alice@CERN.CH) in {where}/CERN_USER",
            )
        )
    keytab = secrets.file(keytab_name) if keytab_name else None
    if keytab_name is None:
        problems.append(
            Problem(
                "secrets.CERN_KEYTAB",
                f"missing for workflow.resources.kerberos; put the keytab's file name "
                f"(e.g. .keytab) in {where}/CERN_KEYTAB and the keytab beside it",
            )
        )
    elif keytab is None:
        problems.append(
            Problem("secrets.CERN_KEYTAB", f"names {keytab_name}, which is not a file in {where}")
        )
    if user is None or keytab is None:
        return []
    cache = folder / "krb5cc"
    ready = folder / ".kerberos.ready"
    argv = _python_m("sidecar.kerberos")
    argv += ["--keytab", str(keytab), "--principal", user, "--ccache", str(cache)]
    argv += ["--ready-file", str(ready), *_remove_on_exit(cache, ready)]
    return [Sidecar("kerberos", "KRB5CCNAME", cache, argv, f"FILE:{cache}", ready_file=ready)]


def _remove_on_exit(*paths: Path) -> list[str]:
    """Even when `daskstep run` is killed, its sidecars (told by the kernel) remove these."""
    return [arg for path in paths for arg in ("--remove-on-exit", str(path))]


def _voms(secrets: Secrets, folder: Path, problems: list[Problem]) -> list[Sidecar]:
    where = secrets.where()
    proxy = folder / "x509up"
    ready = folder / ".voms.ready"
    argv = _python_m("sidecar.voms") + ["--ready-file", str(ready)]
    supplied = secrets.value("VOMSPROXY_FILE")
    if supplied is not None:  # REANA's multi-user mode: the user uploads a proxy
        source = secrets.file(supplied)
        if source is None:
            problems.append(
                Problem("secrets.VOMSPROXY_FILE", f"names {supplied}: not a file in {where}")
            )
            return []
        argv += ["--watch", str(proxy), *_remove_on_exit(proxy, ready)]
        copies = ((source, proxy),)
        return [_proxy_sidecar(proxy, argv, ready, copies)]
    cert, key = secrets.file("usercert.pem"), secrets.file("userkey.pem")
    for name, path in (("usercert.pem", cert), ("userkey.pem", key)):
        if path is None:
            problems.append(
                Problem(
                    f"secrets.{name}",
                    f"missing for workflow.resources.voms_proxy; put your grid {name[4:8]} "
                    f"in {where}/{name} (or a proxy, named by VOMSPROXY_FILE)",
                )
            )
    vo = secrets.value("VONAME")
    if vo is None:
        problems.append(
            Problem(
                "secrets.VONAME",
                f"missing for workflow.resources.voms_proxy; put your VO (e.g. cms) in "
                f"{where}/VONAME",
            )
        )
    passphrase = None
    encoded = secrets.value("VOMSPROXY_PASS")
    if encoded is not None:
        try:
            passphrase = base64.b64decode(encoded, validate=True).rstrip(b"\r\n")
        except (binascii.Error, ValueError):
            problems.append(
                Problem(
                    "secrets.VOMSPROXY_PASS",
                    "is not base64; store the passphrase base64-encoded, as REANA does "
                    "(printf %s PASSPHRASE | base64)",
                )
            )
    if cert is None or key is None or vo is None or (encoded and passphrase is None):
        return []
    valid = secrets.env.get(VOMS_VALID_ENV, "12:00").strip()
    if not re.fullmatch(r"\d+:[0-5]\d", valid) or valid.replace(":", "").strip("0") == "":
        problems.append(Problem(VOMS_VALID_ENV, f"{valid!r} is not HH:MM; write e.g. 12:00"))
    if problems:
        return []
    # a private copy of the key: a secrets mount is often 0644, which grid tools refuse
    private_key = folder / "userkey.pem"
    argv += ["--cert", str(cert), "--key", str(private_key), "--voms", vo, "--out", str(proxy)]
    argv += ["--valid", valid, *_remove_on_exit(proxy, ready, private_key)]
    if passphrase is not None:
        argv += ["--passphrase-file", "/dev/stdin"]
    copies = ((key, private_key),)
    return [_proxy_sidecar(proxy, argv, ready, copies, passphrase)]


def _proxy_sidecar(
    proxy: Path,
    argv: list[str],
    ready: Path,
    copies: tuple[tuple[Path, Path], ...],
    passphrase: bytes | None = None,
) -> Sidecar:
    words = [(str(copy), f"{source.parent}/{source.name}") for source, copy in copies]
    words.append(("(from --passphrase-file)", "(from VOMSPROXY_PASS)"))
    words.append(("give its passphrase with --passphrase-file", "put it in VOMSPROXY_PASS"))
    return Sidecar(
        "voms",
        "X509_USER_PROXY",
        proxy,
        argv,
        str(proxy),
        passphrase,
        copies,
        ready_file=ready,
        words=tuple(words),
    )


class Credentials:
    """Starts the sidecars, waits for their first credential, stops them and removes the files."""

    def __init__(self, sidecars: list[Sidecar], folder: Path, logs: Path) -> None:
        self.sidecars = sidecars
        self.folder = folder
        self.logs = logs
        self.stopping = False
        self.tls: RunTLS | None = None  # the run's CA and certificates, in folder/tls
        self.reaper: Reaper | None = None  # removes the folder if we are killed

    @classmethod
    def for_run(
        cls,
        kerberos: bool,
        voms_proxy: bool,
        secrets: Secrets,
        logs: Path,
        shared: str | None = None,
        tls: str | None = None,
    ) -> Credentials | None:
        """`shared`: a folder batch nodes see too, where the private folder goes instead.
        `tls`: the run id, to make the run's TLS files; None for plain TCP."""
        if not (kerberos or voms_proxy or tls):
            return None
        base = shared or os.environ.get("XDG_RUNTIME_DIR")
        folder = private_folder(base)
        reaper = Reaper("--folder", str(folder))  # before any key is in it
        try:
            credentials = cls(plan(kerberos, voms_proxy, secrets, folder), folder, logs)
            credentials.reaper = reaper
            if tls:
                credentials.tls = RunTLS.create(folder / "tls", tls)
            return credentials
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            reaper.let_go()
            raise

    def environment(self) -> dict[str, str]:
        """What the workers and the steps are given: where the credentials are."""
        return {s.variable: s.value for s in self.sidecars}

    def variables(self) -> dict[str, str]:
        """Which credentials (kerberos, voms) under which variable: no path, which is private."""
        return {s.kind: s.variable for s in self.sidecars}

    def files(self) -> list[Path]:
        return [s.path for s in self.sidecars]

    def step_environment(self) -> dict[str, str]:
        """The steps' share: the credentials' variables, and the folder of the run's client
        certificate, which the entrypoint exports as Dask's TLS variables."""
        env = self.environment()
        if self.tls is not None:
            env["DASKSTEP_TLS_DIR"] = str(self.tls.folder)
        return env

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        for sidecar in self.sidecars:
            self._start_one(sidecar, child_env())

    def _start_one(self, sidecar: Sidecar, env: Mapping[str, str]) -> None:
        for source, copy in sidecar.copies:
            fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(source.read_bytes())
        sidecar.log = self.logs / f"{sidecar.kind}.log"
        with open(sidecar.log, "ab") as log:
            sidecar.proc = subprocess.Popen(
                sidecar.argv,
                env=dict(env),
                stdin=subprocess.PIPE if sidecar.stdin_secret is not None else subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        if sidecar.stdin_secret is not None and sidecar.proc.stdin is not None:
            with contextlib.suppress(BrokenPipeError):
                sidecar.proc.stdin.write(sidecar.stdin_secret + b"\n")
            sidecar.proc.stdin.close()

    def wait_ready(self, timeout: float = READY_TIMEOUT, cancel: StopSignal | None = None) -> None:
        """Until every sidecar made its first credential; CredentialError if one gave up,
        Cancelled if `cancel` is set meanwhile."""
        deadline = time.monotonic() + timeout
        waiting = list(self.sidecars)
        while waiting:
            if cancel is not None and cancel.is_set():
                raise Cancelled(cancel.signum or signal.SIGTERM)
            for sidecar in list(waiting):
                assert sidecar.proc is not None and sidecar.ready_file is not None
                if sidecar.ready_file.exists():
                    waiting.remove(sidecar)
                elif sidecar.proc.poll() is not None:
                    raise self._failure(sidecar)
            if waiting and time.monotonic() > deadline:
                names = ", ".join(s.kind for s in waiting)
                raise CredentialError(f"no {names} credential within {timeout:.0f} s", 69)
            if waiting:
                cancel.wait(0.05) if cancel is not None else time.sleep(0.05)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        """A sidecar that gives up mid-run is said at once, not found out from failing tasks."""
        running = list(self.sidecars)
        while running and not self.stopping:
            for sidecar in list(running):
                assert sidecar.proc is not None
                if sidecar.proc.poll() is not None and not self.stopping:
                    running.remove(sidecar)
                    say(
                        f"warning: {self._failure(sidecar)}; the {sidecar.kind} "
                        "sidecar stopped, tasks that need it fail once the credential expires"
                    )
            time.sleep(1.0)

    def _failure(self, sidecar: Sidecar) -> CredentialError:
        assert sidecar.proc is not None and sidecar.log is not None
        lines = [ln for ln in sidecar.log.read_text(errors="replace").splitlines() if ln.strip()]
        last = lines[-1] if lines else f"exited {sidecar.proc.returncode} without a message"
        last = re.sub(r"^(kerberos sidecar|voms-sidecar):\s*(error:\s*)?", "", last)
        for theirs, ours in sidecar.words:
            last = last.replace(theirs, ours)
        what = "Kerberos ticket" if sidecar.kind == "kerberos" else "VOMS proxy"
        code = sidecar.proc.returncode if sidecar.proc.returncode in (2, 69) else 1
        return CredentialError(f"could not obtain the {what}: {last}", code)

    def stop(self) -> None:
        """Stop the sidecars and remove the credentials. Idempotent."""
        self.stopping = True
        for sidecar in self.sidecars:
            if sidecar.proc is not None and sidecar.proc.poll() is None:
                sidecar.proc.terminate()
        for sidecar in self.sidecars:
            if sidecar.proc is None:
                continue
            try:
                sidecar.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                sidecar.proc.kill()
                sidecar.proc.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
        if self.reaper is not None:
            self.reaper.let_go()
