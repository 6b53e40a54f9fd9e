"""The VOMS sidecar against the real C VOMS tools, a throwaway CA and (when installed) a real vomsd.

Why: the proxy must stay valid for the whole run, every failure must be one clear line, and the
passphrase or key must never leak into argv, environments or output.
"""

from __future__ import annotations

import base64
import contextlib
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import require
from gridca import VO, GridCA, grid_ca  # noqa: F401  (fixtures)
from leaks import pem_lines
from ports import free_port
from vomsd import vomsd  # noqa: F401  (a fixture)

pytestmark = pytest.mark.integration

INIT = shutil.which("voms-proxy-init2") or shutil.which("voms-proxy-init")
INFO = shutil.which("voms-proxy-info2") or shutil.which("voms-proxy-info")
FAKE = shutil.which("voms-proxy-fake")


@pytest.fixture
def ca(grid_ca: GridCA, monkeypatch: pytest.MonkeyPatch) -> GridCA:  # noqa: F811
    """The CA, with the VOMS C tools required and the X509 variables set for children."""
    require(INIT is not None and INFO is not None, "voms-clients (C tools) are not installed")
    for key, value in grid_ca.env().items():
        monkeypatch.setenv(key, value)
    return grid_ca


class Sidecar:
    """The sidecar as a real process, its stderr lines collected by a thread."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sidecar.voms", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).parent.parent,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.err: list[str] = []
        self.out: list[str] = []
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.err), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.out), daemon=True).start()

    def _pump(self, stream, into: list[str]) -> None:
        for line in stream:
            into.append(line)
            self.lines.put(line)

    def wait_line(self, text: str, timeout: float) -> str:
        end = time.monotonic() + timeout
        while (left := end - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            if text in line:
                return line
        raise AssertionError(f"no line with {text!r} in {timeout} s; got {self.err + self.out}")

    def stop(self, stop_file: Path | None = None) -> int:
        if stop_file is not None:
            stop_file.touch()
        else:
            self.proc.terminate()
        try:
            return self.proc.wait(15)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            time.sleep(0.1)  # let the pump threads drain

    @property
    def output(self) -> str:
        return "".join(self.out + self.err)


def run_sidecar(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sidecar.voms", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).parent.parent,
    )


def timeleft(path: Path, flag: str = "--timeleft") -> int:
    out = subprocess.run([INFO, "--file", str(path), flag], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split()[-1])


# --- a real vomsd: proxy with the testvo attribute, renewed --------------------------------------


def test_voms_proxy_from_vomsd_is_made_checked_and_renewed(
    vomsd: GridCA,  # noqa: F811
    ca: GridCA,
    tmp_path: Path,
) -> None:
    out, stop = tmp_path / "creds" / "x509up", tmp_path / "stop"
    pw = tmp_path / "pw"
    pw.write_text(ca.passphrase + "\n")
    sc = Sidecar(
        "--cert", str(ca.user_cert), "--key", str(ca.user_key_encrypted),
        "--passphrase-file", str(pw), "--voms", VO, "--vomses", str(ca.vomses),
        "--out", str(out), "--valid", "00:01", "--renew-before", "52s", "--stop-file", str(stop),
    )  # fmt: skip
    try:
        sc.wait_line("proxy ready", 60)
        assert out.stat().st_mode & 0o777 == 0o600
        check = [INFO, "--file", str(out), "--exists", "--acexists", VO]
        assert subprocess.run(check, capture_output=True).returncode == 0
        first, first_left = out.read_bytes(), timeleft(out, "--actimeleft")
        read_at = time.monotonic()
        assert 0 < first_left <= 60
        time.sleep(2)
        sc.wait_line("proxy renewed", 30)
        second = out.read_bytes()
        assert second != first
        # against what the first proxy has left by now (it was read at whole seconds, rounded
        # down: one more), not 2 s later: a loaded machine reads the renewed one late
        left_now = timeleft_after(first_left + 1, time.monotonic() - read_at)
        assert timeleft(out, "--actimeleft") > left_now
        assert subprocess.run(check, capture_output=True).returncode == 0
        assert out.stat().st_mode & 0o777 == 0o600
    finally:
        rc = sc.stop(stop)
    assert rc == 0, sc.output
    assert "Traceback" not in sc.output
    # judged once it stopped: a renewal every 8 s may be writing its temporary file right now
    # (a loaded CI met one), and none may be left
    assert not [p for p in out.parent.iterdir() if p != out], "temp files left behind"


def timeleft_after(left: int, elapsed: float) -> float:
    """What the first proxy had left after `elapsed` seconds more: the renewed one must beat it."""
    return left - elapsed


def test_plain_proxy_renewal_offline(ca: GridCA, tmp_path: Path) -> None:
    """Without --voms no server is needed: the renewal loop is shown on a plain RFC proxy."""
    out = tmp_path / "x509up"
    sc = Sidecar(
        "--cert", str(ca.user_cert), "--key", str(ca.user_key), "--out", str(out),
        "--valid", "00:01", "--renew-before", "58s",
    )  # fmt: skip
    try:
        sc.wait_line("proxy ready", 30)
        first = out.read_bytes()
        sc.wait_line("proxy renewed", 15)
        assert out.read_bytes() != first
        assert 50 < timeleft(out) <= 60
        assert out.stat().st_mode & 0o777 == 0o600
    finally:
        rc = sc.stop()  # SIGTERM
    assert rc == 0, sc.output
    assert "stopping" in sc.output


# --- error classification ----------------------------------------------------------------------


def error_cases(ca: GridCA, tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    bad_pw = tmp_path / "badpw"
    bad_pw.write_text("not-the-passphrase\n")
    closed = ca.write_vomses(tmp_path / "vomses-closed", VO, free_port())
    user = ["--cert", str(ca.user_cert), "--key", str(ca.user_key)]
    return {
        "wrong passphrase": (
            ["--cert", str(ca.user_cert), "--key", str(ca.user_key_encrypted),
             "--passphrase-file", str(bad_pw)],
            "wrong passphrase for key",
        ),
        "no passphrase": (
            ["--cert", str(ca.user_cert), "--key", str(ca.user_key_encrypted)],
            "is encrypted: give its passphrase",
        ),
        "mismatch": (
            ["--cert", str(ca.user_cert), "--key", str(ca.other_key)],
            "do not match",
        ),
        "expired": (
            ["--cert", str(ca.expired_cert), "--key", str(ca.expired_key)],
            "has expired",
        ),
        "unknown VO": (
            user + ["--voms", "nosuchvo", "--vomses", str(ca.vomses)],
            "unknown VO 'nosuchvo'",
        ),
        "unreachable": (
            user + ["--voms", VO, "--vomses", str(closed)],
            f"VOMS server for '{VO}' at 127.0.0.1:",
        ),
        "missing key": (
            ["--cert", str(ca.user_cert), "--key", str(tmp_path / "nokey.pem")],
            "cannot read --key",
        ),
    }  # fmt: skip


ERROR_NAMES = [
    "wrong passphrase",
    "no passphrase",
    "mismatch",
    "expired",
    "unknown VO",
    "unreachable",
    "missing key",
]


@pytest.mark.parametrize("name", ERROR_NAMES)
def test_failure_is_one_clear_line(ca: GridCA, tmp_path: Path, name: str) -> None:
    args, expected = error_cases(ca, tmp_path)[name]
    out = tmp_path / "out" / "x509up"
    res = run_sidecar(*args, "--out", str(out), "--valid", "00:10")
    assert res.returncode == (69 if name == "unreachable" else 2), res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("voms-sidecar: error: ")
    assert expected in lines[0], lines[0]
    if name == "unreachable":
        assert "unreachable" in lines[0]
    assert "Traceback" not in res.stderr + res.stdout
    assert ca.passphrase not in res.stderr + res.stdout
    assert not out.exists()
    assert not out.parent.exists() or not list(out.parent.iterdir()), "temp proxy left behind"


# --- watch mode --------------------------------------------------------------------------------


def fake_proxy(ca: GridCA, out: Path, past: int) -> Path:
    """A VOMS proxy from voms-proxy-fake, backdated so that 3600 - past seconds remain."""
    require(FAKE is not None, "voms-proxy-fake (voms-clients) is not installed")
    cmd = [
        FAKE, "-cert", str(ca.user_cert), "-key", str(ca.user_key), "-hostcert",
        str(ca.host_cert), "-hostkey", str(ca.host_key), "-voms", VO, "-uri", "localhost:15000",
        "-fqan", f"/{VO}/Role=NULL/Capability=NULL", "-rfc", "-hours", "1", "-vomslife", "1",
        "-pastproxy", str(past), "-pastac", str(past), "-out", str(out),
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


def test_watch_warns_before_expiry_and_keeps_running(ca: GridCA, tmp_path: Path) -> None:
    proxy = fake_proxy(ca, tmp_path / "x509up", past=3570)  # ~30 s left
    stop = tmp_path / "stop"
    sc = Sidecar(
        "--watch", str(proxy), "--warn-before", "1m", "--interval", "1", "--stop-file", str(stop)
    )
    try:
        line = sc.wait_line("expires in", 15)
        assert "warning" in line
        sc.wait_line("expires in", 5)  # still running, still warning
        assert sc.proc.poll() is None
    finally:
        rc = sc.stop(stop)
    assert rc == 0, sc.output


def test_watch_quiet_while_far_from_expiry(ca: GridCA, tmp_path: Path) -> None:
    proxy = fake_proxy(ca, tmp_path / "x509up", past=0)
    sc = Sidecar("--watch", str(proxy), "--warn-before", "10m", "--interval", "1")
    try:
        sc.wait_line("valid for", 15)
    finally:
        rc = sc.stop()
    assert rc == 0
    assert "warning" not in sc.output


@pytest.mark.parametrize("state", ["missing", "expired"])
def test_watch_fails_at_start_on_unusable_proxy(ca: GridCA, tmp_path: Path, state: str) -> None:
    proxy = tmp_path / "x509up"
    if state == "expired":
        fake_proxy(ca, proxy, past=3700)
    res = run_sidecar("--watch", str(proxy), "--warn-before", "1m", timeout=30)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("voms-sidecar: error: "), res.stderr
    assert ("expired" if state == "expired" else "missing") in lines[0]
    assert "Traceback" not in res.stderr


# --- leaks -------------------------------------------------------------------------------------


def proc_texts(pid: int) -> list[str]:
    texts = []
    for name in ("cmdline", "environ"):
        with contextlib.suppress(OSError):
            texts.append(Path(f"/proc/{pid}/{name}").read_bytes().replace(b"\0", b" ").decode())
    return texts


def test_no_secret_in_argv_env_or_output(ca: GridCA, tmp_path: Path) -> None:
    pw = tmp_path / "pw"
    pw.write_text(ca.passphrase + "\n")
    secrets = [ca.passphrase, *pem_lines(ca.user_key_encrypted), *pem_lines(ca.user_key)]
    out = tmp_path / "x509up"
    # Renewing every second spawns a voms-proxy-init child again and again to catch in /proc.
    sc = Sidecar(
        "--cert", str(ca.user_cert), "--key", str(ca.user_key_encrypted),
        "--passphrase-file", str(pw), "--out", str(out), "--valid", "00:01",
        "--renew-before", "59s",
    )  # fmt: skip
    seen: dict[int, list[str]] = {}
    children = set()
    try:
        end = time.monotonic() + 6
        while time.monotonic() < end:
            seen.setdefault(sc.proc.pid, []).extend(proc_texts(sc.proc.pid))
            try:
                kids = psutil.Process(sc.proc.pid).children(recursive=True)
            except psutil.Error:
                kids = []
            for kid in kids:
                texts = proc_texts(kid.pid)
                if any("voms-proxy" in t for t in texts):
                    children.add(kid.pid)
                seen.setdefault(kid.pid, []).extend(texts)
            time.sleep(0.005)
        sc.wait_line("proxy renewed", 10)
    finally:
        rc = sc.stop()
    assert rc == 0, sc.output
    assert children, "never saw a voms-proxy-init child in /proc"
    for pid, texts in seen.items():
        for text in texts:
            for secret in secrets:
                assert secret not in text, f"secret in /proc/{pid}"
    for secret in secrets:
        assert secret not in sc.output
    assert "-pwstdin" in " ".join(t for p in children for t in seen[p])


def test_stop_file_stops_with_exit_0(ca: GridCA, tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    sc = Sidecar(
        "--cert", str(ca.user_cert), "--key", str(ca.user_key), "--out",
        str(tmp_path / "x509up"), "--valid", "01:00", "--stop-file", str(stop),
    )  # fmt: skip
    sc.wait_line("proxy ready", 30)
    assert sc.stop(stop) == 0


@pytest.fixture(autouse=True)
def _no_stray_env() -> Iterator[None]:
    """The tests' own environment never holds the passphrase (it only lives in files)."""
    yield
    assert all("corr3ct" not in v for v in os.environ.values())


def test_failed_renewal_keeps_old_proxy_and_recovers(ca: GridCA, tmp_path: Path) -> None:
    """A later failure warns and retries with backoff; the valid old proxy stays in place."""
    key = tmp_path / "userkey.pem"
    shutil.copy(ca.user_key, key)
    out = tmp_path / "x509up"
    sc = Sidecar(
        "--cert", str(ca.user_cert), "--key", str(key), "--out", str(out),
        "--valid", "00:01", "--renew-before", "55s",
    )  # fmt: skip
    try:
        sc.wait_line("proxy ready", 30)
        first = out.read_bytes()
        key.chmod(0o600)
        shutil.copy(ca.other_key, key)  # the cert no longer matches its key
        line = sc.wait_line("renewal failed", 15)
        assert "keeping the old proxy" in line and "do not match" in line
        assert out.read_bytes() == first
        assert sc.proc.poll() is None
        shutil.copy(ca.user_key, key)
        sc.wait_line("proxy renewed", 15)
        assert out.read_bytes() != first
    finally:
        rc = sc.stop()
    assert rc == 0, sc.output


def test_kubernetes_form_reads_reanas_secret_files(ca: GridCA, tmp_path: Path) -> None:
    """As the rendered pods run it: the key from a Secret volume (here 0644, shared), the
    passphrase base64-encoded in VOMSPROXY_PASS as REANA stores it. The sidecar uses a 0600
    copy of the key, which goes when it stops; the passphrase shows nowhere."""
    secrets, creds = tmp_path / "secrets", tmp_path / "creds"
    secrets.mkdir()
    creds.mkdir()
    key = secrets / "userkey.pem"
    key.write_bytes(Path(ca.user_key_encrypted).read_bytes())
    key.chmod(0o644)
    encoded = base64.b64encode(ca.passphrase.encode()).decode()
    (secrets / "VOMSPROXY_PASS").write_text(encoded + "\n")
    copy, out, stop = creds / ".userkey.pem", creds / "x509up", tmp_path / "stop"
    sc = Sidecar(
        "--cert", str(ca.user_cert), "--key", str(key), "--private-key-copy", str(copy),
        "--passphrase-base64-file", str(secrets / "VOMSPROXY_PASS"), "--out", str(out),
        "--valid", "01:00", "--stop-file", str(stop),
    )  # fmt: skip
    try:
        sc.wait_line("proxy ready", 30)
        assert copy.stat().st_mode & 0o777 == 0o600
        assert 3500 < timeleft(out) <= 3600
    finally:
        rc = sc.stop(stop)
    assert rc == 0, sc.output
    assert not copy.exists()
    assert ca.passphrase not in sc.output and encoded not in sc.output

    (secrets / "VOMSPROXY_PASS").write_text("%%% not base64\n")
    res = run_sidecar(
        "--cert", str(ca.user_cert), "--key", str(key), "--out", str(out),
        "--passphrase-base64-file", str(secrets / "VOMSPROXY_PASS"),
    )  # fmt: skip
    assert res.returncode == 2 and "not base64" in res.stderr and "%%%" not in res.stderr
