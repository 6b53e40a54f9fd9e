"""`daskstep run` with REANA's `kerberos` and `voms_proxy` flags, end to end against real servers.

A k5test KDC with 1-minute tickets and an XRootD server that demands krb5; a test CA, a real vomsd
and an XRootD server that demands GSI with a VOMS attribute. Dask tasks pinned to every worker
open a ROOT file on those servers with uproot. Each read uses a new XRootD user name, which the
client keys its connections by, so every read is a new connection and a new authentication.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from conftest import daskstep, require, wait_for, wait_gone, write_workflow
from gridca import VO, GridCA
from kdc import Kdc
from leaks import LeakWatch, keytab_needles, pem_needles
from slurm import Slurm
from xrootd import EXPECTED_SUM, XRootD, start_gsi_xrootd, start_krb5_xrootd, xrootd_available

RUN_1 = Path(".daskstep") / "runs" / "1"  # the first run's own folder
pytestmark = pytest.mark.integration

READER = """\
import json, os, stat, sys, time
from dask.distributed import Client

url, duration, pause = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])


def read(tag):
    import os, stat, time
    import uproot

    retried = []
    while True:
        try:
            with uproot.open(url.replace("root://", f"root://{tag}@")) as f:
                total = int(f["events"]["x"].array(library="np").sum())
            break
        except OSError as e:
            # XRootD's GSI client keeps the proxy it loaded until that proxy expires (its
            # cache), then loads the renewed one: an open in the very second the old one
            # expires can fail once. Said, and tried again once: a renewal that did not work
            # fails the retry too.
            if retried or "X509_USER_PROXY" not in os.environ or "Auth failed" not in str(e):
                raise
            retried.append(time.time())
            time.sleep(1)
    found = {}
    for var in ("KRB5CCNAME", "X509_USER_PROXY"):
        if var in os.environ:
            path = os.environ[var].removeprefix("FILE:")
            st = os.stat(path)
            # which file: a replaced one may get a freed inode back, so the time tells them apart
            found[var] = [path, oct(stat.S_IMODE(st.st_mode)), f"{st.st_ino}@{st.st_mtime_ns}"]
    return {"time": time.time(), "sum": total, "pid": os.getpid(), "credentials": found,
            "retried": retried}


client = Client(os.environ["DASK_SCHEDULER_URI"])
workers = sorted(client.scheduler_info()["workers"])
reads, start, n = [], time.time(), 0
while True:
    futures = {
        w: client.submit(read, f"r{n}w{i}", workers=[w], allow_other_workers=False, pure=False)
        for i, w in enumerate(workers)
    }
    for w, f in futures.items():
        reads.append(dict(f.result(), worker=w))
    n += 1
    if time.time() - start >= duration:
        break
    time.sleep(pause)
json.dump(reads, open("reads.json", "w"))
print(f"{len(reads)} reads on {len(workers)} workers over {time.time() - start:.0f} s")
"""


def workflow(folder: Path, url: str, flags: tuple[str, ...], duration: float = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "reader.py").write_text(READER)
    return write_workflow(
        folder, [("read", [f"python reader.py {url} {duration} 4"])], workers=2, flags=flags
    )


def run(reana_yaml: Path, secrets: Path | None, env: dict[str, str], timeout: float = 400):
    args = ["run", str(reana_yaml)]
    if secrets is not None:
        args += ["--secrets", str(secrets)]
    proc = daskstep(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return proc, out, err


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KRB5", "X509", "VOMS"))}
    env.update(extra)
    return env


# --- Kerberos ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def krb5_xrootd(kdc: Kdc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[XRootD]:
    ok, reason = xrootd_available()
    require(ok, reason)
    folder = tmp_path_factory.mktemp("xrootd-krb5")
    service = f"xrootd/localhost@{kdc.name}"
    kdc.realm.addprinc(service)
    kdc.realm.extract_keytab(service, str(folder / "xrootd.keytab"))
    server = start_krb5_xrootd(folder / "xrootd.keytab", service, kdc.krb5_config)
    yield server
    server.stop()


def kerberos_secrets(kdc: Kdc, folder: Path, user: str) -> tuple[Path, Path]:
    """A secrets folder as REANA mounts it: CERN_USER, CERN_KEYTAB and the keytab it names."""
    principal, keytab = kdc.principal(user, folder)
    secrets = folder / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "CERN_USER").write_text(principal + "\n")
    (secrets / "CERN_KEYTAB").write_text(".keytab\n")
    shutil.copy(keytab, secrets / ".keytab")
    (secrets / ".keytab").chmod(0o600)
    return secrets, keytab


LIFE = 20  # seconds: a ticket's life in the long run below


@pytest.mark.slow
def test_kerberos_tasks_read_on_every_worker_for_more_than_two_ticket_lifetimes(
    kdc: Kdc, krb5_xrootd: XRootD, tmp_path: Path
) -> None:
    secrets, keytab = kerberos_secrets(kdc, tmp_path, "reader")
    # 20-second tickets, renewable for 30 s only: REANA's `kinit -R` loop would die there; ours
    # renews (at half the life), then kinits again
    kdc.realm.run_kadminl(f"modprinc -maxlife {LIFE}s -maxrenewlife 30s reader@" + kdc.name)
    ws = tmp_path / "ws"
    reana = workflow(ws, krb5_xrootd.url(), ("kerberos",), duration=2.5 * LIFE)
    # a cache that does not exist: only the sidecar's can make the reads work
    env = base_env(KRB5_CONFIG=kdc.krb5_config, KRB5CCNAME=f"FILE:{tmp_path}/no-such-cache")
    logins_before = len(krb5_xrootd.logins())
    started = time.time()
    proc = daskstep("run", str(reana), "--secrets", str(secrets), env=env)
    with LeakWatch(proc.pid, keytab_needles(keytab)) as watch:
        out, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    reads = json.loads((ws / "reads.json").read_text())
    workers = {r["worker"] for r in reads}
    assert len(workers) == 2
    assert all(r["sum"] == EXPECTED_SUM for r in reads)
    # more than two ticket lifetimes, every worker still reading at the end
    assert max(r["time"] for r in reads) - min(r["time"] for r in reads) > 2.2 * LIFE
    late = {r["worker"] for r in reads if r["time"] - started > 2.2 * LIFE}
    assert late == workers
    # every read was a new authenticated connection
    logins = krb5_xrootd.logins()[logins_before:]
    assert len([ln for ln in logins if "login as reader" in ln]) >= len(reads)
    # the workers got the sidecar's cache, 0600, in a private folder that is gone now
    caches = {r["credentials"]["KRB5CCNAME"][0] for r in reads}
    assert len(caches) == 1
    cache = Path(caches.pop())
    assert {r["credentials"]["KRB5CCNAME"][1] for r in reads} == {"0o600"}
    assert len({r["credentials"]["KRB5CCNAME"][2] for r in reads}) >= 3, "cache never replaced"
    assert not cache.parent.exists(), "the credentials folder outlived the run"
    sidecar_log = (ws / RUN_1 / "sidecars" / "kerberos.log").read_text()
    assert sidecar_log.count("renewed ticket") >= 1
    assert sidecar_log.count("re-obtained ticket") >= 1, "renew-till passed without a new kinit"
    assert "credentials ready" in err
    status = json.loads((ws / ".daskstep" / "status.json").read_text())
    assert status["credentials"]["kerberos"]["variable"] == "KRB5CCNAME"
    # no keytab bytes in any argv, in the run's environments, or in anything the run wrote
    assert watch.scans > 20 and len(watch.pids_seen) >= 5
    assert watch.scan_files(ws / ".daskstep") >= 12  # logs, store, index, status, sidecars
    watch.scan_output(out + err)
    assert not watch.hits, watch.hits


@pytest.mark.slow
def test_kerberos_on_slurm_workers_from_a_shared_folder(
    kdc: Kdc, krb5_xrootd: XRootD, slurm: Slurm, tmp_path: Path
) -> None:
    """Batch workers get KRB5CCNAME pointing into the site's shared folder, which the sidecar
    keeps valid; their tasks read over krb5."""
    secrets, _ = kerberos_secrets(kdc, tmp_path, "batchreader")
    ws = tmp_path / "ws"
    reana = workflow(ws, krb5_xrootd.url(), ("kerberos",), duration=5)
    shared = tmp_path / "shared"
    shared.mkdir()
    (tmp_path / "site.yaml").write_text(f"shared_directory: {shared}\n")
    env = base_env(KRB5_CONFIG=kdc.krb5_config, KRB5CCNAME=f"FILE:{tmp_path}/no-such-cache")
    proc = daskstep(
        "run", str(reana), "--secrets", str(secrets), "--backend", "slurm",
        "--site", str(tmp_path / "site.yaml"), env={**env, **slurm.env},
    )  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    reads = json.loads((ws / "reads.json").read_text())
    assert len({r["worker"] for r in reads}) == 2
    assert all(r["sum"] == EXPECTED_SUM for r in reads)
    caches = {Path(r["credentials"]["KRB5CCNAME"][0]) for r in reads}
    assert len(caches) == 1 and caches.pop().parent.parent == shared
    status = json.loads((ws / ".daskstep" / "status.json").read_text())
    assert len(status["cluster"]["worker_jobs"]) == 2  # the readers were Slurm jobs
    assert list(shared.iterdir()) == [], "the credentials folder outlived the run"


def test_kerberos_without_the_sidecar_fails_with_an_auth_error(
    kdc: Kdc, krb5_xrootd: XRootD, tmp_path: Path
) -> None:
    ws = tmp_path / "ws"
    reana = workflow(ws, krb5_xrootd.url(), ())
    env = base_env(KRB5_CONFIG=kdc.krb5_config, KRB5CCNAME=f"FILE:{tmp_path}/no-such-cache")
    proc, out, err = run(reana, None, env, timeout=120)
    assert proc.returncode == 1, err[-3000:]
    assert "Auth failed" in out + err
    assert not (ws / "reads.json").exists()


@pytest.mark.parametrize("case", ["missing keytab", "wrong principal", "no CERN_USER"])
def test_kerberos_bad_secrets_fail_before_the_cluster(kdc: Kdc, tmp_path: Path, case: str) -> None:
    secrets, _ = kerberos_secrets(kdc, tmp_path, f"bad{case.split()[1].lower()}")
    expected = {
        "missing keytab": "secrets.CERN_KEYTAB: names .keytab",
        "wrong principal": "is not in keytab",
        "no CERN_USER": "secrets.CERN_USER: missing",
    }[case]
    if case == "missing keytab":
        (secrets / ".keytab").unlink()
    elif case == "wrong principal":
        (tmp_path / "elsewhere").mkdir()
        other, _ = kdc.principal(f"other{os.getpid()}", tmp_path / "elsewhere")
        (secrets / "CERN_USER").write_text(other)
    else:
        (secrets / "CERN_USER").unlink()
    ws = tmp_path / "ws"
    reana = workflow(ws, "root://localhost:1//none", ("kerberos",))
    proc, _, err = run(reana, secrets, base_env(KRB5_CONFIG=kdc.krb5_config), timeout=120)
    assert proc.returncode == 2, err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err
    assert "cluster ready" not in err and not (ws / RUN_1 / "raw" / "scheduler.log").exists()


# --- VOMS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsi_xrootd(grid_ca: GridCA) -> Iterator[XRootD]:
    ok, reason = xrootd_available()
    require(ok, reason)
    ca = grid_ca
    server = start_gsi_xrootd(ca.cert_dir, ca.vomsdir, ca.host_cert, ca.host_key)
    yield server
    server.stop()


def voms_env(ca: GridCA, **extra: str) -> dict[str, str]:
    return base_env(**ca.env(), VOMS_USERCONF=str(ca.vomses), **extra)


def voms_secrets(ca: GridCA, folder: Path, passphrase: str | None = None) -> Path:
    """REANA's layout: usercert.pem, userkey.pem, VONAME, and VOMSPROXY_PASS in base64."""
    secrets = folder / "secrets"
    secrets.mkdir(mode=0o700)
    shutil.copy(ca.user_cert, secrets / "usercert.pem")
    shutil.copy(ca.user_key_encrypted, secrets / "userkey.pem")
    (secrets / "userkey.pem").chmod(0o644)  # as a Kubernetes secret volume mounts it
    (secrets / "VONAME").write_text(VO + "\n")
    phrase = (passphrase or ca.passphrase) + "\n"  # REANA's docs: echo PASS | base64
    (secrets / "VOMSPROXY_PASS").write_text(base64.b64encode(phrase.encode()).decode())
    return secrets


@pytest.mark.slow
def test_voms_tasks_read_with_the_sidecars_proxy_across_renewals(
    vomsd: GridCA, gsi_xrootd: XRootD, tmp_path: Path
) -> None:
    ca = vomsd
    secrets = voms_secrets(ca, tmp_path)
    ws = tmp_path / "ws"
    # 1-minute proxies from the real vomsd, renewed 30 s before they end, read for 75 s
    reana = workflow(ws, gsi_xrootd.url(), ("voms_proxy",), duration=75)
    needles = {
        "passphrase": ca.passphrase.encode(),
        "passphrase (base64)": (secrets / "VOMSPROXY_PASS").read_bytes(),
        **pem_needles(ca.user_key_encrypted, "encrypted key"),
        **pem_needles(ca.user_key, "key"),
    }
    # REANA also exports env secrets as variables: daskstep has it, none of its children may
    env = voms_env(ca, VOMSPROXY_PASS=(secrets / "VOMSPROXY_PASS").read_text())
    env["DASKSTEP_VOMS_VALID"] = "00:01"
    started = time.time()
    proc = daskstep("run", str(reana), "--secrets", str(secrets), env=env)
    with LeakWatch(proc.pid, needles, root_environ=False) as watch:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    reads = json.loads((ws / "reads.json").read_text())
    assert {r["worker"] for r in reads} and len({r["worker"] for r in reads}) == 2
    assert all(r["sum"] == EXPECTED_SUM for r in reads)
    # an open retried at most once, and only when the first proxy (1 minute) ran out
    retries = [t - started for r in reads for t in r["retried"]]
    assert len(retries) <= 2 and all(50 < t < 70 for t in retries), retries
    late = {r["worker"] for r in reads if r["time"] - started > 70}
    assert late == {r["worker"] for r in reads}, "not every worker read after the renewals"
    proxies = {tuple(r["credentials"]["X509_USER_PROXY"][:2]) for r in reads}
    assert len(proxies) == 1
    path, mode = proxies.pop()
    assert mode == "0o600" and not Path(path).parent.exists()
    # the tasks read with at least three proxies: the first and two renewed ones
    assert len({r["credentials"]["X509_USER_PROXY"][2] for r in reads}) >= 3
    log = (ws / RUN_1 / "sidecars" / "voms.log").read_text()
    assert "proxy ready" in log and log.count("proxy renewed") >= 2
    assert watch.scan_files(ws / ".daskstep") >= 12  # logs, store, index, status, sidecars
    watch.scan_output(out + err)
    assert watch.scans > 5
    assert not watch.hits, watch.hits


def make_proxy(ca: GridCA, out: Path, kind: str) -> Path:
    """A plain RFC proxy (no VOMS attribute), or an expired VOMS one."""
    env = dict(os.environ, **ca.env())
    if kind == "plain":
        cmd = ["voms-proxy-init2", "-cert", str(ca.user_cert), "-key", str(ca.user_key)]
        cmd += ["-rfc", "-hours", "1", "-out", str(out)]
    else:
        cmd = ["voms-proxy-fake", "-cert", str(ca.user_cert), "-key", str(ca.user_key)]
        cmd += ["-hostcert", str(ca.host_cert), "-hostkey", str(ca.host_key), "-voms", VO]
        cmd += ["-uri", "localhost:15000", "-fqan", f"/{VO}/Role=NULL/Capability=NULL", "-rfc"]
        cmd += ["-hours", "1", "-vomslife", "1", "-pastproxy", "3700", "-pastac", "3700"]
        cmd += ["-out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    out.chmod(0o600)
    return out


@pytest.mark.parametrize("proxy", ["plain", "expired", "none"])
def test_voms_tasks_fail_without_a_voms_proxy(
    grid_ca: GridCA, gsi_xrootd: XRootD, tmp_path: Path, proxy: str
) -> None:
    """No sidecar: the workers get X509_USER_PROXY from the environment, or nothing."""
    extra = {}
    if proxy == "none":
        extra["X509_USER_PROXY"] = str(tmp_path / "no-such-proxy")
    else:
        extra["X509_USER_PROXY"] = str(make_proxy(grid_ca, tmp_path / "x509up", proxy))
    ws = tmp_path / "ws"
    reana = workflow(ws, gsi_xrootd.url(), ())
    proc, out, err = run(reana, None, voms_env(grid_ca, **extra), timeout=120)
    assert proc.returncode == 1, err[-3000:]
    assert "Auth failed" in out + err
    assert not (ws / "reads.json").exists()


def user_proxy_run(ca: GridCA, tmp_path: Path, kind: str, url: str):
    """REANA's VOMSPROXY_FILE mode: the user uploads a proxy, used as given and watched."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    make_proxy(ca, secrets / "x509up_u1000", kind)
    (secrets / "VOMSPROXY_FILE").write_text("x509up_u1000")
    reana = workflow(tmp_path / "ws", url, ("voms_proxy",))
    return run(reana, secrets, voms_env(ca), timeout=120)


def test_voms_user_supplied_plain_proxy_is_watched_but_tasks_fail(
    grid_ca: GridCA, gsi_xrootd: XRootD, tmp_path: Path
) -> None:
    proc, out, err = user_proxy_run(grid_ca, tmp_path, "plain", gsi_xrootd.url())
    assert proc.returncode == 1, err[-3000:]
    assert "credentials ready" in err and "Auth failed" in out + err


def test_voms_user_supplied_expired_proxy_fails_before_the_cluster(
    grid_ca: GridCA, tmp_path: Path
) -> None:
    proc, _, err = user_proxy_run(grid_ca, tmp_path, "expired", "root://localhost:1//none")
    assert proc.returncode == 2, err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and "expired" in errors[0], err
    assert "secrets/x509up_u1000" in errors[0] and "daskstep-credentials" not in errors[0]
    assert "cluster ready" not in err


VOMS_BAD = ["wrong passphrase", "mismatched key", "not base64", "no VONAME", "bad validity"]


@pytest.mark.parametrize("case", VOMS_BAD)
def test_voms_bad_secrets_fail_before_the_cluster(
    grid_ca: GridCA, tmp_path: Path, case: str
) -> None:
    secrets = voms_secrets(grid_ca, tmp_path, "not-the-passphrase" if "wrong" in case else None)
    expected = {
        "wrong passphrase": f"wrong passphrase for key {secrets}/userkey.pem (from VOMSPROXY_PASS)",
        "mismatched key": "do not match",
        "not base64": "secrets.VOMSPROXY_PASS: is not base64",
        "no VONAME": "secrets.VONAME: missing",
        "bad validity": "DASKSTEP_VOMS_VALID: '12h' is not HH:MM",
    }[case]
    env = voms_env(grid_ca)
    if case == "mismatched key":
        shutil.copy(grid_ca.other_key, secrets / "userkey.pem")
        (secrets / "VOMSPROXY_PASS").unlink()
    elif case == "not base64":
        (secrets / "VOMSPROXY_PASS").write_text("this is not base64!")
    elif case == "no VONAME":
        (secrets / "VONAME").unlink()
    elif case == "bad validity":
        env["DASKSTEP_VOMS_VALID"] = "12h"
    ws = tmp_path / "ws"
    reana = workflow(ws, "root://localhost:1//none", ("voms_proxy",))
    proc, out, err = run(reana, secrets, env, timeout=120)
    assert proc.returncode == 2, err
    errors = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(errors) == 1 and expected in errors[0], err
    assert "Traceback" not in err and grid_ca.passphrase not in out + err
    assert "cluster ready" not in err


def test_credentials_need_a_secrets_folder(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    reana = workflow(ws, "root://localhost:1//none", ("kerberos",))
    env = base_env()
    env.pop("DASKSTEP_SECRETS", None)
    proc, _, err = run(reana, tmp_path / "no-such-folder", env, timeout=60)
    assert proc.returncode == 2, err
    assert err.strip().splitlines() == [
        f"error: --secrets: {tmp_path / 'no-such-folder'} is not a folder; give the secrets folder"
    ]


def test_killed_run_leaves_no_sidecar_and_no_ticket(kdc: Kdc, tmp_path: Path) -> None:
    """SIGKILL of `daskstep run`: the kernel tells the sidecar, which removes the ticket."""
    secrets, _ = kerberos_secrets(kdc, tmp_path, "killed")
    ws = tmp_path / "ws"
    reana = write_workflow(ws, [("wait", ["sleep 120"])], workers=1, flags=("kerberos",))
    proc = daskstep(
        "run", str(reana), "--secrets", str(secrets), env=base_env(KRB5_CONFIG=kdc.krb5_config)
    )
    try:
        wait_for(lambda: (ws / RUN_1 / "raw" / "job.log").exists(), 60, "the step")
        tree = psutil.Process(proc.pid).children(recursive=True)
        sidecars = [p for p in tree if "sidecar.kerberos" in " ".join(p.cmdline())]
        assert len(sidecars) == 1
        cmd = sidecars[0].cmdline()
        cache = Path(cmd[cmd.index("--ccache") + 1])
        assert cache.exists() and cache.stat().st_mode & 0o777 == 0o600
        assert cache.parent.stat().st_mode & 0o777 == 0o700
    finally:
        proc.kill()
        proc.communicate()
    assert not wait_gone({p.pid for p in tree}, 15), "processes of the killed run are left"
    assert not cache.parent.exists(), "credentials or TLS keys outlived the killed run"


def test_a_sidecar_dying_mid_run_is_reported(kdc: Kdc, tmp_path: Path) -> None:
    secrets, _ = kerberos_secrets(kdc, tmp_path, "dying")
    ws = tmp_path / "ws"
    reana = write_workflow(ws, [("wait", ["sleep 4"])], workers=1, flags=("kerberos",))
    env = base_env(KRB5_CONFIG=kdc.krb5_config)
    proc = daskstep("run", str(reana), "--secrets", str(secrets), env=env)
    wait_for(lambda: (ws / RUN_1 / "raw" / "job.log").exists(), 60, "the step")
    for p in psutil.Process(proc.pid).children(recursive=True):
        if "sidecar.kerberos" in " ".join(p.cmdline()):
            p.kill()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    warnings = [ln for ln in err.splitlines() if "warning:" in ln and "kerberos sidecar" in ln]
    assert len(warnings) == 1, err
