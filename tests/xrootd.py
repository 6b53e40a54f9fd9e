"""Real XRootD servers for the credential tests: one that demands krb5, one that demands GSI with
a VOMS attribute. They serve a small ROOT file written with uproot.

xrootd refuses to run as root, so it runs as nobody (`-R nobody`) from a folder under /tmp that
nobody can traverse, with copies of the keytab, host key and CA files it may read.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ports import free_port

XROOTD = "/usr/bin/xrootd"
SECLIBS = ("libXrdSeckrb5-5.so", "libXrdSecgsi-5.so", "libXrdVoms-5.so")
TREE = "events"
ENTRIES = 1000


def xrootd_available() -> tuple[bool, str]:
    if not Path(XROOTD).exists():
        return False, "xrootd not found (apt-get install xrootd-server xrootd-server-plugins)"
    libdirs = [Path("/usr/lib/x86_64-linux-gnu"), Path("/usr/lib64"), Path("/usr/lib")]
    for lib in SECLIBS:
        if not any((d / lib).exists() for d in libdirs):
            return False, f"{lib} not found (apt-get install xrootd-plugins xrootd-voms-plugins)"
    for module in ("uproot", "XRootD", "fsspec_xrootd"):
        if importlib.util.find_spec(module) is None:
            return False, f"{module} is not installed (pip install uproot fsspec-xrootd xrootd)"
    return True, ""


def write_root_file(path: Path) -> None:
    """A ROOT file with one TTree of ENTRIES entries; its sum is known to the tests."""
    import numpy as np
    import uproot

    with uproot.recreate(path) as f:
        f[TREE] = {"x": np.arange(ENTRIES, dtype=np.int64)}


EXPECTED_SUM = ENTRIES * (ENTRIES - 1) // 2


@dataclass
class XRootD:
    """One xrootd process serving `data` on 127.0.0.1/::1:`port`."""

    root: Path
    port: int
    proc: subprocess.Popen
    log: Path
    extra: tuple[Path, ...] = ()  # more folders to remove on stop

    @property
    def file_path(self) -> str:
        return str(self.root / "data" / "events.root")

    def url(self, host: str = "localhost") -> str:
        return f"root://{host}:{self.port}/{self.file_path}"

    def logins(self) -> list[str]:
        """The server's login lines: one per new authenticated connection."""
        if not self.log.exists():
            return []
        return [ln for ln in self.log.read_text(errors="replace").splitlines() if " login" in ln]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for folder in (self.root, *self.extra):
            shutil.rmtree(folder, ignore_errors=True)


def _private_copy(src: Path, dst: Path, uid: int, mode: int = 0o600) -> Path:
    shutil.copyfile(src, dst)
    os.chown(dst, uid, -1)
    dst.chmod(mode)
    return dst


def _start(
    name: str,
    security: str,
    files: dict[str, Path],
    env: dict[str, str],
    extra: tuple[Path, ...] = (),
) -> XRootD:
    nobody = pwd.getpwnam("nobody").pw_uid
    root = Path(tempfile.mkdtemp(prefix=f"daskstep-xrootd-{name}-"))
    root.chmod(0o755)
    for sub in ("data", "admin", "run", "logs", "etc"):
        (root / sub).mkdir()
        os.chown(root / sub, nobody, -1)
    write_root_file(root / "data" / "events.root")
    os.chmod(root / "data" / "events.root", 0o644)
    copies = {k: _private_copy(v, root / "etc" / v.name, nobody) for k, v in files.items()}
    port = free_port()
    cfg = root / "xrootd.cfg"
    cfg.write_text(
        f"xrd.port {port}\n"
        f"all.export {root / 'data'}\n"
        f"all.adminpath {root / 'admin'}\n"
        f"all.pidpath {root / 'run'}\n"
        "xrootd.seclib libXrdSec.so\n" + security.format(**{k: str(v) for k, v in copies.items()})
    )
    log = root / "logs" / name / "xrootd.log"  # xrootd adds -n NAME
    env = {k: v.format(**{k: str(v) for k, v in copies.items()}) for k, v in env.items()}
    with open(root / "logs" / "stderr", "wb") as err:
        proc = subprocess.Popen(
            [XROOTD, "-R", "nobody", "-c", str(cfg), "-l", str(log.parent.parent / "xrootd.log")]
            + ["-n", name],
            env={**os.environ, **env},
            stdout=err,
            stderr=err,
            start_new_session=True,
        )
    server = XRootD(root, port, proc, log, extra)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = "".join(
                p.read_text(errors="replace") for p in (log, root / "logs" / "stderr") if p.exists()
            )
            server.stop()
            raise RuntimeError(f"xrootd exited {proc.returncode}:\n{text[-3000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.stop()
    raise RuntimeError("xrootd did not listen within 30 s")


def start_krb5_xrootd(keytab: Path, principal: str, krb5_config: str) -> XRootD:
    """XRootD that accepts krb5 only, as `principal` (xrootd/localhost@REALM) with `keytab`."""
    security = f"sec.protocol krb5 {{keytab}} {principal}\nsec.protbind * only krb5\n"
    files = {"keytab": keytab, "krb5conf": Path(krb5_config)}  # nobody cannot read the realm
    return _start("krb5", security, files, {"KRB5_CONFIG": "{krb5conf}"})


def start_gsi_xrootd(cert_dir: Path, vomsdir: Path, host_cert: Path, host_key: Path) -> XRootD:
    """XRootD that accepts GSI only, and only with a VOMS attribute it can verify."""
    security = (
        "sec.protocol gsi -certdir:{certdir} -cert:{hostcert} -key:{hostkey} -gridmap:/dev/null "
        "-gmapopt:10 -ca:1 -crl:1 -vomsfun:libXrdVoms.so -vomsfunparms:dbg -vomsat:2\n"
        "sec.protbind * only gsi\n"
    )
    nobody = pwd.getpwnam("nobody").pw_uid
    files = {"hostcert": host_cert, "hostkey": host_key}
    # the CA and VOMS folders are read as whole folders: copies that nobody may read
    staging = Path(tempfile.mkdtemp(prefix="daskstep-xrootd-gsi-ca-"))
    staging.chmod(0o755)
    try:
        shutil.copytree(cert_dir, staging / "certificates")
        shutil.copytree(vomsdir, staging / "vomsdir")
        for p in staging.rglob("*"):
            os.chown(p, nobody, -1)
            p.chmod(0o755 if p.is_dir() else 0o644)
        security = security.replace("{certdir}", str(staging / "certificates"))
        env = {
            "X509_CERT_DIR": str(staging / "certificates"),
            "X509_VOMS_DIR": str(staging / "vomsdir"),
        }
        return _start("gsi", security, files, env, (staging,))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
