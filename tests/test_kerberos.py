"""The Kerberos sidecar against a real MIT KDC (k5test): obtain, renew, re-kinit, fail, stop.

Tickets here live 15 s and are renewable for 40 s, so a whole renew-till cycle fits in a test.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_for
from kdc import REALM, Kdc
from leaks import keytab_needles
from ports import free_port

from sidecar.kerberos import parse_duration
from sidecar.krb5tools import Ticket, classify_kinit_error, parse_klist

REPO = Path(__file__).resolve().parent.parent


class Sidecar:
    """One `python -m sidecar.kerberos` process, its output kept in files."""

    def __init__(self, folder: Path, args: list[str], env: dict[str, str]) -> None:
        self.out_path = folder / "sidecar.out"
        self.err_path = folder / "sidecar.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sidecar.kerberos", *args],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=err,
            )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def out(self) -> str:
        return self.out_path.read_text()

    def err(self) -> str:
        return self.err_path.read_text()

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def start(tmp_path: Path, kdc: Kdc) -> Iterator:
    """Start sidecars with KRB5_CONFIG pointing at the test realm; kill leftovers afterwards."""
    started: list[Sidecar] = []

    def _start(*args: str, krb5_config: str | None = None) -> Sidecar:
        env = dict(os.environ)
        env["KRB5_CONFIG"] = krb5_config or kdc.krb5_config
        env["KRB5CCNAME"] = f"FILE:{tmp_path}/not-this-cache"  # --ccache must win
        folder = tmp_path / f"run{len(started)}"
        folder.mkdir()
        s = Sidecar(folder, list(args), env)
        started.append(s)
        return s

    yield _start
    for s in started:
        s.kill()


def unreachable_krb5_conf(folder: Path) -> Path:
    """A krb5.conf whose KDC is a loopback port nobody listens on."""
    conf = folder / "krb5.conf"
    conf.write_text(
        f"[libdefaults]\n default_realm = {REALM}\n udp_preference_limit = 1\n"
        f"[realms]\n {REALM} = {{\n  kdc = 127.0.0.1:{free_port()}\n }}\n"
    )
    return conf


def klist_ok(cache: Path) -> bool:
    return subprocess.run(["klist", "-s", "-c", f"FILE:{cache}"]).returncode == 0


def read_ticket(cache: Path) -> Ticket:
    out = subprocess.run(
        ["klist", "-c", f"FILE:{cache}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, LC_ALL="C"),
        check=True,
    ).stdout
    return parse_klist(out, REALM)


# -- pure parsing: no KDC ---------------------------------------------------------------------


def test_parse_duration() -> None:
    assert parse_duration("90") == 90
    assert parse_duration("15s") == 15
    assert parse_duration("10h") == 36000
    assert parse_duration("7d") == 7 * 86400
    assert parse_duration("1h30m") == 5400


def test_parse_klist_reads_tgt_times() -> None:
    out = (
        "Ticket cache: FILE:/tmp/cc\nDefault principal: alice@DASKSTEP.TEST\n\n"
        "Valid starting     Expires            Service principal\n"
        "11/27/26 12:41:58  11/27/26 12:42:13  krbtgt/DASKSTEP.TEST@DASKSTEP.TEST\n"
        "\trenew until 11/27/26 12:42:38\n"
    )
    t = parse_klist(out, "DASKSTEP.TEST")
    assert t.principal == "alice@DASKSTEP.TEST"
    assert t.end - t.start == 15
    assert t.renew_till is not None and t.renew_till - t.start == 40


def test_kinit_errors_are_classified() -> None:
    def msg(stderr: str) -> str:
        return str(classify_kinit_error(stderr, "/k/kt", "alice@R"))

    assert "cannot reach the KDC for realm R" in msg(
        "kinit: Cannot contact any KDC for realm 'R' while getting initial credentials\n"
    )
    assert "is missing" in msg("kinit: Key table file '/k/kt' not found while getting initial\n")
    assert "not in keytab" in msg("kinit: Keytab contains no suitable keys for alice@R while\n")
    assert "clock skew" in msg("kinit: Clock skew too great while getting initial credentials\n")
    assert "Something odd" in msg("kinit: Something odd\n")


# -- against the real KDC ---------------------------------------------------------------------


@pytest.mark.integration
def test_first_ticket_then_sigterm(tmp_path: Path, kdc: Kdc, start) -> None:
    principal, keytab = kdc.principal("first", tmp_path)
    cache = tmp_path / "new" / "folder" / "krb5cc"
    ready = tmp_path / "ready"
    s = start(
        "--keytab", str(keytab), "--principal", principal, "--ccache", str(cache),
        "--ready-file", str(ready), "--check-interval", "1",
    )  # fmt: skip
    wait_for(lambda: ready.exists() or s.proc.poll() is not None, 20, "the ready file")
    assert s.proc.poll() is None, s.err()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert stat.S_IMODE(cache.parent.stat().st_mode) == 0o700
    assert klist_ok(cache)
    assert read_ticket(cache).principal == principal
    assert not (tmp_path / "not-this-cache").exists()
    assert "obtained ticket" in s.out() and "ready" in s.out()
    assert [p.name for p in cache.parent.iterdir()] == ["krb5cc"]  # no temp caches left

    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(5) == 0
    assert time.monotonic() - t0 < 3
    assert "Traceback" not in s.err()


@pytest.mark.integration
def test_stop_file_stops(tmp_path: Path, kdc: Kdc, start) -> None:
    principal, keytab = kdc.principal("stopper", tmp_path)
    cache, ready, stop = tmp_path / "cc", tmp_path / "ready", tmp_path / "stop"
    s = start(
        "--keytab", str(keytab), "--principal", principal, "--ccache", str(cache),
        "--ready-file", str(ready), "--stop-file", str(stop), "--check-interval", "30",
    )  # fmt: skip
    wait_for(lambda: ready.exists() or s.proc.poll() is not None, 20, "the ready file")
    stop.touch()
    assert s.wait(5) == 0, s.err()
    assert "stopped" in s.out()


@pytest.mark.integration
@pytest.mark.slow
def test_renews_then_kinits_again_and_cache_never_invalid(tmp_path: Path, kdc: Kdc, start) -> None:
    principal, keytab = kdc.principal("renewer", tmp_path)
    cache, ready = tmp_path / "cc", tmp_path / "ready"
    s = start(
        "--keytab", str(keytab), "--principal", principal, "--ccache", str(cache),
        "--ready-file", str(ready), "--check-interval", "1",
        "--lifetime", "15s", "--renew-lifetime", "40s",
    )  # fmt: skip
    wait_for(lambda: ready.exists() or s.proc.poll() is not None, 20, "the ready file")
    assert s.proc.poll() is None, s.err()

    # A reader that copies the cache as a worker would open it: it must always be whole and valid.
    samples: list[Ticket] = []
    failures: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        copy = tmp_path / "copy"
        while not stop.is_set():
            shutil.copyfile(cache, copy)
            if not klist_ok(copy):
                failures.append(time.strftime("%X"))
            else:
                samples.append(read_ticket(copy))
            stop.wait(0.2)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        deadline = time.monotonic() + 50
        while time.monotonic() < deadline and "re-obtained" not in s.out():
            assert s.proc.poll() is None, s.err()
            time.sleep(0.2)
        time.sleep(3)  # keep sampling across the switch to the fresh ticket
    finally:
        stop.set()
        thread.join()

    assert not failures, f"cache invalid at {failures}"
    assert {t.principal for t in samples} == {principal}
    renew_tills = sorted({t.renew_till for t in samples if t.renew_till is not None})
    assert len(renew_tills) >= 2, "no fresh kinit -kt after renew-till came near"
    first = [t for t in samples if t.renew_till == renew_tills[0]]
    starts = sorted({t.start for t in first})
    assert len(starts) >= 3, f"ticket not renewed: valid-starting stayed at {starts}"
    assert renew_tills[1] > renew_tills[0]
    assert "renewed ticket" in s.out() and "re-obtained ticket" in s.out()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(5) == 0


@pytest.mark.integration
def test_unreachable_kdc_retries_then_gives_up(tmp_path: Path, kdc: Kdc, start) -> None:
    principal, keytab = kdc.principal("lonely", tmp_path)
    conf = unreachable_krb5_conf(tmp_path)
    t0 = time.monotonic()
    s = start(
        "--keytab", str(keytab), "--principal", principal, "--ccache", str(tmp_path / "cc"),
        "--kdc-deadline", "4", krb5_config=str(conf),
    )  # fmt: skip
    code = s.wait(20)
    assert code == 69
    assert time.monotonic() - t0 < 10
    assert s.out().count("retry") >= 2  # it did retry, with backoff
    err = s.err().strip().splitlines()
    assert len(err) == 1 and f"cannot reach the KDC for realm {REALM}" in err[0], err
    assert not (tmp_path / "cc").exists()


@pytest.mark.integration
def test_missing_keytab_is_one_clear_line(tmp_path: Path, kdc: Kdc, start) -> None:
    s = start(
        "--keytab", str(tmp_path / "nope.keytab"), "--principal", f"x@{REALM}",
        "--ccache", str(tmp_path / "new" / "cc"),
    )  # fmt: skip
    assert s.wait(20) == 2
    assert not (tmp_path / "new").exists()  # the folder it made for the cache is gone again
    err = s.err().strip().splitlines()
    assert len(err) == 1 and "nope.keytab is missing" in err[0], err
    assert not (tmp_path / "cc").exists()


@pytest.mark.integration
def test_wrong_principal_is_one_clear_line(tmp_path: Path, kdc: Kdc, start) -> None:
    _, keytab = kdc.principal("owner", tmp_path)
    (tmp_path / "elsewhere").mkdir()
    other, _ = kdc.principal("other", tmp_path / "elsewhere")  # in the KDC, not in this keytab
    s = start("--keytab", str(keytab), "--principal", other, "--ccache", str(tmp_path / "cc"))
    assert s.wait(20) == 2
    err = s.err().strip().splitlines()
    assert len(err) == 1 and f"principal {other} is not in keytab" in err[0], err
    assert "Traceback" not in s.err()


@pytest.mark.integration
def test_keytab_bytes_never_leak(tmp_path: Path, kdc: Kdc, start) -> None:
    principal, keytab = kdc.principal("secretive", tmp_path)
    needles = list(keytab_needles(keytab).values())
    cache, ready = tmp_path / "cc", tmp_path / "ready"
    s = start(
        "--keytab", str(keytab), "--principal", principal, "--ccache", str(cache),
        "--ready-file", str(ready), "--check-interval", "1",
    )  # fmt: skip
    wait_for(lambda: ready.exists() or s.proc.poll() is not None, 20, "the ready file")
    seen = [
        Path(f"/proc/{s.pid}/cmdline").read_bytes(),
        Path(f"/proc/{s.pid}/environ").read_bytes(),
    ]
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(5) == 0
    seen += [s.out_path.read_bytes(), s.err_path.read_bytes()]
    for blob in seen:
        for needle in needles:
            assert needle not in blob


@pytest.mark.integration
def test_sigterm_during_backoff_exits_0(tmp_path: Path, kdc: Kdc, start) -> None:
    principal, keytab = kdc.principal("patient", tmp_path)
    conf = unreachable_krb5_conf(tmp_path)
    s = start(
        "--keytab", str(keytab), "--principal", principal, "--ccache", str(tmp_path / "cc"),
        "--kdc-deadline", "300", krb5_config=str(conf),
    )  # fmt: skip
    wait_for(lambda: "retry 2" in s.out() or s.proc.poll() is not None, 20, "a second retry")
    t0 = time.monotonic()
    s.proc.send_signal(signal.SIGTERM)
    assert s.wait(5) == 0, s.err()
    assert time.monotonic() - t0 < 3
