"""A throwaway grid CA for VOMS tests: made with openssl, so no real grid identity is ever needed.

`make_grid_ca(folder, vomsd_port)` writes everything a VOMS client and server need: the CA, user,
host, expired and mismatched certs, an encrypted key, the cert dir, the vomsdir and a vomses file.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from ports import free_port

PASSPHRASE = "corr3ct-h0rse-battery"
VO = "testvo"
USER_SUBJECT = "/C=CH/O=DaskstepTest/CN=Test User"
HOST_SUBJECT = "/C=CH/O=DaskstepTest/CN=localhost"
CA_SUBJECT = "/C=CH/O=DaskstepTest/CN=Daskstep Test CA"

CA_EXT = """
[req]
distinguished_name = dn
[dn]
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[user]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment,dataEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[host]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


@dataclass
class GridCA:
    """Paths of one throwaway grid CA and the credentials it signed."""

    root: Path
    ca_cert: Path
    ca_key: Path
    user_cert: Path
    user_key: Path
    user_key_encrypted: Path
    passphrase: str
    host_cert: Path
    host_key: Path
    expired_cert: Path
    expired_key: Path
    other_key: Path  # matches none of the certs: pair it with user_cert for a mismatch
    cert_dir: Path
    vomsdir: Path
    vomses: Path
    vomsd_port: int

    def env(self) -> dict[str, str]:
        """X509 variables a VOMS client needs to trust this CA.

        Not VOMS_USERCONF: voms-proxy-init reads it besides -vomses, so a test meant to reach a
        closed port would fall back to the working server.
        """
        return {"X509_CERT_DIR": str(self.cert_dir), "X509_VOMS_DIR": str(self.vomsdir)}

    def write_vomses(self, path: Path, vo: str, port: int) -> Path:
        """A vomses file with one entry for `vo` at 127.0.0.1:port."""
        path.write_text(f'"{vo}" "127.0.0.1" "{port}" "{HOST_SUBJECT}" "{vo}"\n')
        return path


def have_openssl() -> bool:
    return shutil.which("openssl") is not None


def _ssl(*args: str, cwd: Path, stdin: str | None = None) -> str:
    out = subprocess.run(
        ["openssl", *args], cwd=cwd, input=stdin, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"openssl {args[0]} failed: {out.stderr.strip()}")
    return out.stdout


def _key(folder: Path, name: str) -> Path:
    path = folder / name
    _ssl("genrsa", "-traditional", "-out", name, "2048", cwd=folder)
    path.chmod(0o400)
    return path


def _sign(folder: Path, name: str, subject: str, key: Path, ext: str, days: str) -> Path:
    """A cert for `key`, signed by the CA; `days` is passed to `openssl x509 -days`."""
    _ssl("req", "-new", "-key", key.name, "-subj", subject, "-out", f"{name}.csr", cwd=folder)
    _ssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        days,
        "-sha256",
        "-extfile",
        "ext.cnf",
        "-extensions",
        ext,
        "-out",
        f"{name}.pem",
        cwd=folder,
    )
    return folder / f"{name}.pem"


def _expired(folder: Path, key: Path) -> Path:
    """A user cert that expired yesterday: signed with `openssl ca` and explicit past dates."""
    db = folder / "cadb"
    db.mkdir()
    (db / "index.txt").write_text("")
    (db / "serial").write_text("1000\n")
    (folder / "ca.cnf").write_text(
        f"""[ca]
default_ca = test
[test]
database = {db}/index.txt
serial = {db}/serial
new_certs_dir = {db}
default_md = sha256
policy = any
unique_subject = no
copy_extensions = none
[any]
commonName = supplied
{CA_EXT.split("[host]")[0].split("[user]")[1].join(["[user]", ""])}
"""
    )
    _ssl(
        "req",
        "-new",
        "-key",
        key.name,
        "-subj",
        "/C=CH/O=DaskstepTest/CN=Expired User",
        "-out",
        "expired.csr",
        cwd=folder,
    )
    _ssl(
        "ca",
        "-batch",
        "-config",
        "ca.cnf",
        "-cert",
        "ca.pem",
        "-keyfile",
        "ca.key",
        "-in",
        "expired.csr",
        "-out",
        "expired.pem",
        "-extensions",
        "user",
        "-startdate",
        "20200101000000Z",
        "-enddate",
        "20200102000000Z",
        "-notext",
        cwd=folder,
    )
    return folder / "expired.pem"


def make_grid_ca(root: Path, vomsd_port: int) -> GridCA:
    """Create the CA and everything it signs under `root` (which must exist)."""
    (root / "ext.cnf").write_text(CA_EXT)
    ca_key = _key(root, "ca.key")
    _ssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        CA_SUBJECT,
        "-days",
        "30",
        "-sha256",
        "-extensions",
        "ca",
        "-config",
        "ext.cnf",
        "-out",
        "ca.pem",
        cwd=root,
    )
    user_key = _key(root, "userkey.pem")
    user_cert = _sign(root, "usercert", USER_SUBJECT, user_key, "user", "30")
    enc = root / "userkey-enc.pem"
    _ssl(
        "rsa",
        "-in",
        "userkey.pem",
        "-aes256",
        "-traditional",
        "-passout",
        "stdin",
        "-out",
        enc.name,
        cwd=root,
        stdin=PASSPHRASE + "\n",
    )
    enc.chmod(0o400)
    host_key = _key(root, "hostkey.pem")
    host_cert = _sign(root, "hostcert", HOST_SUBJECT, host_key, "host", "30")
    expired_key = _key(root, "expiredkey.pem")
    expired_cert = _expired(root, expired_key)
    other_key = _key(root, "otherkey.pem")

    cert_dir = root / "certificates"
    cert_dir.mkdir()
    h = _ssl("x509", "-in", "ca.pem", "-noout", "-hash", cwd=root).strip()
    shutil.copy(root / "ca.pem", cert_dir / f"{h}.0")
    (cert_dir / f"{h}.signing_policy").write_text(
        f"access_id_CA X509 '{CA_SUBJECT}'\npos_rights globus CA:sign\n"
        "cond_subjects globus '\"/C=CH/O=DaskstepTest/*\"'\n"
    )
    crl_db = root / "crldb"
    crl_db.mkdir()
    (crl_db / "index.txt").write_text("")
    (root / "crl.cnf").write_text(
        f"[ca]\ndefault_ca = c\n[c]\ndatabase = {crl_db}/index.txt\ndefault_md = sha256\n"
        "default_crl_days = 30\n"
    )
    _ssl(
        "ca",
        "-gencrl",
        "-config",
        "crl.cnf",
        "-cert",
        "ca.pem",
        "-keyfile",
        "ca.key",
        "-out",
        str(cert_dir / f"{h}.r0"),
        cwd=root,
    )

    vomsdir = root / "vomsdir"
    (vomsdir / VO).mkdir(parents=True)
    (vomsdir / VO / "localhost.lsc").write_text(f"{HOST_SUBJECT}\n{CA_SUBJECT}\n")

    ca = GridCA(
        root=root,
        ca_cert=root / "ca.pem",
        ca_key=ca_key,
        user_cert=user_cert,
        user_key=user_key,
        user_key_encrypted=enc,
        passphrase=PASSPHRASE,
        host_cert=host_cert,
        host_key=host_key,
        expired_cert=expired_cert,
        expired_key=expired_key,
        other_key=other_key,
        cert_dir=cert_dir,
        vomsdir=vomsdir,
        vomses=root / "vomses",
        vomsd_port=vomsd_port,
    )
    ca.write_vomses(ca.vomses, VO, vomsd_port)
    return ca


@pytest.fixture(scope="session")
def grid_ca(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GridCA]:
    """One CA for the whole session; skipped (or failed in CI) without openssl."""
    from conftest import require

    require(have_openssl(), "openssl is not installed")
    yield make_grid_ca(tmp_path_factory.mktemp("gridca"), free_port())


# --- a real vomsd (MariaDB-backed) for testvo --------------------------------------------------
