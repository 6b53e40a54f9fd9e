"""Per-run TLS: the run's own CA and certificates, a scheduler that takes only the run's own
processes, and steps whose unchanged `Client(os.environ["DASK_SCHEDULER_URI"])` still works."""

from __future__ import annotations

import json
import os
import ssl
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import daskstep, script, write_workflow

from daskstep.tls import RunTLS, client_environment
from entrypoint.waiter import TLS_FILES, TLS_PREFIX

# What a step sees and what it can do: the run's client works; a plain TCP client and a TLS
# client of another CA are refused. One JSON line, so the test reads what the step saw.
PROBE = script(
    """
    import json, os
    from distributed import Client
    from distributed.security import Security

    uri = os.environ["DASK_SCHEDULER_URI"]
    seen = {"uri": uri, "tls": {k: v for k, v in os.environ.items() if "__TLS__" in k}}
    with Client(uri, timeout=20) as client:
        seen["sum"] = client.submit(sum, [1, 2, 3]).result()
        # straight from the worker that holds it, over the worker's own address
        seen["direct"] = client.gather(client.submit(sum, [4, 5]), direct=True)
        seen["workers"] = sorted(client.scheduler_info()["workers"])
        seen["folders"] = sorted(
            {oct(os.stat(os.path.dirname(a.split("://", 1)[1])).st_mode & 0o777)
             for a in seen["workers"] if a.startswith("unix://")}
        )

    def no_cert_refused(address):
        # A TLS client that trusts the run's CA but has no certificate of it (not through
        # Security: it fills a missing certificate in from the variables). A Dask server
        # speaks first once connected, so a client it accepted reads a byte.
        import socket, ssl

        host, port = address.split("://", 1)[1].rsplit(":", 1)
        ca = os.environ["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"]
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False
        try:
            with socket.create_connection((host, int(port)), timeout=5) as raw:
                with context.wrap_socket(raw) as tls:
                    return False if tls.recv(1) else "closed"
        except (OSError, ssl.SSLError) as e:
            return type(e).__name__

    def refused(address, **kwargs):
        try:
            with Client(address, timeout=3, **kwargs):
                return False
        except Exception as e:
            return type(e).__name__

    plain = "tcp://" + uri.split("://", 1)[1]
    seen["plain"] = refused(plain, security=Security())
    if uri.startswith("tls://"):
        seen["no_cert"] = no_cert_refused(uri)
        try:  # a client of another CA (needs cryptography, which old images lack)
            seen["stranger"] = refused(uri, security=Security.temporary())
        except ImportError:
            pass
    print("PROBE " + json.dumps(seen), flush=True)
    """
)


def probe(out: str) -> dict:
    (line,) = [ln for ln in out.splitlines() if ln.startswith("PROBE ")]
    return json.loads(line[len("PROBE ") :])


def test_the_run_ca_signs_both_certificates_and_keys_are_private(tmp_path: Path) -> None:
    tls = RunTLS.create(tmp_path / "tls", "ds-test")
    assert sorted(p.name for p in (tmp_path / "tls").iterdir()) == sorted(tls.files())
    assert stat.S_IMODE((tmp_path / "tls").stat().st_mode) == 0o700
    for key in (tls.cluster_key, tls.client_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert "PRIVATE" not in tls.ca.read_text()  # the CA's key is thrown away, not kept
    for role in ("cluster", "client"):  # each verifies against the run's CA, as TLS will
        cert, key = tls.pair(role)
        context = ssl.create_default_context(cafile=str(tls.ca))
        context.load_cert_chain(str(cert), str(key))
        out = subprocess.run(
            ["openssl", "verify", "-CAfile", str(tls.ca), str(cert)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and ": OK" in out.stdout, out


def test_two_runs_do_not_trust_each_other(tmp_path: Path) -> None:
    one = RunTLS.create(tmp_path / "one", "a")
    two = RunTLS.create(tmp_path / "two", "b")
    out = subprocess.run(
        ["openssl", "verify", "-CAfile", str(one.ca), str(two.client_cert)],
        capture_output=True,
        text=True,
    )
    assert out.returncode != 0


def test_the_entrypoint_exports_what_daskstep_means(tmp_path: Path) -> None:
    """The entrypoint cannot import daskstep; the two lists of variables must agree."""
    tls = RunTLS.create(tmp_path / "tls", "x")
    ours = client_environment(tls.folder)
    assert {TLS_PREFIX + k: str(tls.folder / v) for k, v in TLS_FILES.items()}.items() <= (
        ours.items()
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    out = subprocess.run(
        [sys.executable, "-m", "entrypoint", "--tls-dir", str(tls.folder), "--", "env"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    given = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    assert {k: given.get(k) for k in ours} == ours


def test_a_tls_dir_without_the_files_is_a_usage_error(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "entrypoint", "--tls-dir", str(tmp_path), "--", "true"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 64
    assert "ca.pem is missing" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.integration
def test_the_scheduler_takes_only_the_runs_own_clients(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    reana = write_workflow(tmp_path, [("probe", ["python probe.py"])])
    proc = daskstep("run", str(reana))
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    seen = probe(out)
    assert seen["uri"].startswith("tls://") and seen["sum"] == 6
    assert seen["plain"] and seen["no_cert"] and seen["stranger"], seen  # all refused
    assert set(seen["tls"]) >= {TLS_PREFIX + k for k in TLS_FILES}
    assert "scheduler tls://" in err
    # The workers' own traffic: private sockets in a folder only this user can enter
    # (tests/test_unix_comm.py holds who may connect).
    assert seen["direct"] == 9 and len(seen["workers"]) == 2, seen
    assert all(a.startswith("unix:///") for a in seen["workers"]), seen["workers"]
    assert seen["folders"] == ["0o700"], seen
    folder = Path(seen["tls"][TLS_PREFIX + "CA_FILE"]).parent
    assert not folder.exists(), "the run's TLS files outlived it"


@pytest.mark.integration
def test_tls_off_is_plain_tcp(tmp_path: Path) -> None:
    (tmp_path / "probe.py").write_text(PROBE)
    reana = write_workflow(tmp_path, [("probe", ["python probe.py"])])
    proc = daskstep("run", str(reana), "--tls", "off")
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err
    seen = probe(out)
    assert seen["uri"].startswith("tcp://") and seen["sum"] == 6 and seen["tls"] == {}
    assert seen["plain"] is False  # anyone who reaches the port is let in: why TLS is default


def test_a_servers_ca_is_kept_when_its_certificate_is_made_anew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`daskstep serve`'s users trust its CA once (REANA_SERVER_CA_CERTS): a certificate made
    anew for another address, or near its end, must come from that same CA."""
    from cryptography import x509

    from daskstep import tls as tls_module
    from daskstep.tls import ServerTLS

    def cert_of(path: Path) -> x509.Certificate:
        return x509.load_pem_x509_certificate(path.read_bytes())

    server = ServerTLS(tmp_path / "tls")
    assert server.ensure("127.0.0.1") is True
    ca, first = server.ca.read_bytes(), server.cert.read_bytes()
    cert_of(server.cert).verify_directly_issued_by(cert_of(server.ca))
    assert (
        cert_of(server.ca).not_valid_after_utc.year
        >= cert_of(server.cert).not_valid_after_utc.year + 5
    )
    for key in (server.key, server.folder / "ca-key.pem"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600

    assert server.ensure("127.0.0.1") is False  # a restart: nothing made anew
    assert (server.ca.read_bytes(), server.cert.read_bytes()) == (ca, first)

    assert server.ensure("10.9.8.7") is False  # another --host: a new certificate, the same CA
    assert server.ca.read_bytes() == ca and server.cert.read_bytes() != first
    alt = cert_of(server.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert "10.9.8.7" in [str(ip) for ip in alt.value.get_values_for_type(x509.IPAddress)]
    cert_of(server.cert).verify_directly_issued_by(cert_of(server.ca))

    monkeypatch.setattr(tls_module, "SERVER_DAYS", 10)  # a certificate near its end...
    server.cert.unlink()
    server.ensure("10.9.8.7")
    near_end = server.cert.read_bytes()
    monkeypatch.setattr(tls_module, "SERVER_DAYS", 365)
    server.ensure("10.9.8.7")  # ...is made anew at the next start, by the same CA
    assert server.cert.read_bytes() != near_end and server.ca.read_bytes() == ca
    cert_of(server.cert).verify_directly_issued_by(cert_of(server.ca))
