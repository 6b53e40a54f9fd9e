"""A real vomsd (with a private MariaDB on a unix socket) for the VOMS sidecar tests."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from gridca import CA_SUBJECT, USER_SUBJECT, VO, GridCA

VOMSD = "/usr/sbin/voms"
VOMS_SQL = Path("/usr/lib/voms/libvomsmysql.so")
VOMS_SCHEMA = Path("/usr/share/voms/voms-mysql.data")


def have_vomsd() -> bool:
    return (
        Path(VOMSD).exists()
        and VOMS_SQL.exists()
        and VOMS_SCHEMA.exists()
        and shutil.which("mariadbd") is not None
        and shutil.which("mariadb-install-db") is not None
        and shutil.which("mariadb") is not None
    )


def _wait(check, timeout: float, what: str) -> None:
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f} s")


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _vomsd_sql(ca: GridCA) -> str:
    bootstrap = [
        (1, "/O=VOMS/O=System/CN=Dummy Certificate Authority"),
        (2, "/O=VOMS/O=System/CN=Authorization Manager Attributes"),
        (3, "/O=VOMS/O=System/CN=VOMS Group"),
        (4, "/O=VOMS/O=System/CN=VOMS Role"),
        (5, "/O=VOMS/O=System/CN=VOMS Capability"),
        (6, CA_SUBJECT),
    ]
    rows = "\n".join(f"INSERT INTO ca VALUES ({i}, '{dn}', 'x');" for i, dn in bootstrap)
    # DNs in slash form, as vomsd compares them.
    return f"""{rows}
INSERT INTO admins VALUES (1, '/O=VOMS/O=System/CN=Local Database Administrator', '', 1);
INSERT INTO `groups` VALUES (1, '/{VO}', 1, 1);
INSERT INTO roles VALUES (1, 'VO-Admin');
INSERT INTO seqnumber VALUES ('00');
INSERT INTO version (version) VALUES (2);
INSERT INTO usr (userid, dn, ca, cn) VALUES (1, '{USER_SUBJECT}', 6, 'Test User');
INSERT INTO m (userid, gid, rid, cid) VALUES (1, 1, NULL, NULL);
"""


@pytest.fixture(scope="session")
def vomsd(grid_ca: GridCA, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GridCA]:
    """A real vomsd for testvo on 127.0.0.1:<grid_ca.vomsd_port>, backed by a private MariaDB.

    Only the test user is a member. vomsd daemonizes even with -foreground, so its pid is found
    by its unique log file path and stopped by that pid.
    """
    import os
    import signal

    import psutil
    from conftest import require

    require(have_vomsd(), "vomsd needs voms-server, voms-mysql-plugin and mariadb-server")
    d = tmp_path_factory.mktemp("vomsd")
    sock = d / "db.sock"
    subprocess.run(
        [
            "mariadb-install-db",
            "--no-defaults",
            f"--datadir={d / 'db'}",
            "--user=root",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ],
        capture_output=True,
        check=True,
    )
    db = subprocess.Popen(
        [
            "mariadbd",
            "--no-defaults",
            f"--datadir={d / 'db'}",
            f"--socket={sock}",
            "--skip-networking",
            "--user=root",
            f"--pid-file={d / 'db.pid'}",
            f"--log-error={d / 'db.err'}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    voms_pid: int | None = None
    try:
        client = ["mariadb", "--no-defaults", "-S", str(sock), "-u", "root"]

        def db_up() -> bool:
            return subprocess.run([*client, "-e", "SELECT 1"], capture_output=True).returncode == 0

        _wait(db_up, 60, "mariadbd")
        query_pw = "vomsq-" + os.urandom(6).hex()
        dbname = f"voms_{VO}"
        setup = (
            f"CREATE DATABASE {dbname}; CREATE USER 'vomsq'@'localhost' IDENTIFIED BY "
            f"'{query_pw}'; GRANT SELECT, LOCK TABLES ON {dbname}.* TO 'vomsq'@'localhost';"
        )
        subprocess.run([*client, "-e", setup], capture_output=True, check=True)
        schema = VOMS_SCHEMA.read_text() + _vomsd_sql(grid_ca)
        subprocess.run(
            [*client, "-D", dbname], input=schema, text=True, capture_output=True, check=True
        )
        passfile = d / "voms.pass"
        passfile.write_text(query_pw + "\n")
        passfile.chmod(0o640)  # vomsd insists on 640
        logfile = d / "vomsd.log"
        port = grid_ca.vomsd_port
        subprocess.run(
            [
                VOMSD,
                "-port",
                str(port),
                "-vo",
                VO,
                "-dbname",
                dbname,
                "-username",
                "vomsq",
                "-passfile",
                str(passfile),
                "-sqlloc",
                str(VOMS_SQL),
                "-mysql-socket",
                str(sock),
                "-x509_cert_dir",
                str(grid_ca.cert_dir),
                "-x509_user_cert",
                str(grid_ca.host_cert),
                "-x509_user_key",
                str(grid_ca.host_key),
                "-logfile",
                str(logfile),
                "-uri",
                f"localhost:{port}",
                "-foreground",
                "-loglevel",
                "4",
            ],
            capture_output=True,
            check=True,
            timeout=30,
        )

        def find_vomsd() -> bool:
            nonlocal voms_pid
            for p in psutil.process_iter(["cmdline"]):
                if str(logfile) in (p.info["cmdline"] or []):
                    voms_pid = p.pid
            return voms_pid is not None and _port_open(port)

        _wait(find_vomsd, 30, "vomsd")
        yield grid_ca
    finally:
        if voms_pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(voms_pid, signal.SIGTERM)
        db.terminate()
        try:
            db.wait(30)
        except subprocess.TimeoutExpired:
            db.kill()
