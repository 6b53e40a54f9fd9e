"""Per-run TLS: a CA of the run's own, a certificate for the cluster (scheduler and workers) and
one for its clients (the steps, and daskstep itself).

Why per run: the workers hold the user's Kerberos ticket and VOMS proxy, and a Dask scheduler
runs whatever code a connected client sends. With TLS, Dask's comms demand a certificate from
the run's CA on both sides, so only the run's own processes can reach the cluster. The CA's key
signs the two certificates and is then thrown away: nobody, daskstep included, can make another.

Keys are EC P-256 (a few milliseconds to make), written 0600 in the run's private folder.
"""

from __future__ import annotations

import datetime
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DAYS = 30  # longer than any run; the files are removed when the run ends
PREFIX = "DASK_DISTRIBUTED__COMM__TLS__"


@dataclass(frozen=True)
class RunTLS:
    """The run's TLS files, all in `folder`."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cluster_cert(self) -> Path:
        return self.folder / "cluster.pem"

    @property
    def cluster_key(self) -> Path:
        return self.folder / "cluster-key.pem"

    @property
    def client_cert(self) -> Path:
        return self.folder / "client.pem"

    @property
    def client_key(self) -> Path:
        return self.folder / "client-key.pem"

    @classmethod
    def create(cls, folder: Path, run_id: str, hosts: tuple[str, ...] = ()) -> RunTLS:
        """Make the CA and both certificates in `folder` (created 0700)."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        tls = cls(folder)
        ca_key, ca_cert = _ca(run_id)
        names = ("127.0.0.1", "::1", "localhost", socket.gethostname(), *hosts)
        for cert_path, key_path, role in (
            (tls.cluster_cert, tls.cluster_key, "cluster"),
            (tls.client_cert, tls.client_key, "client"),
        ):
            key, cert = _leaf(ca_key, ca_cert, f"daskstep {run_id} {role}", names)
            _write(key_path, _key_pem(key), 0o600)
            _write(cert_path, _cert_pem(cert), 0o644)
        _write(tls.ca, _cert_pem(ca_cert), 0o644)
        return tls

    def files(self) -> dict[str, Path]:
        """By the names the Kubernetes Secret and the mounts use."""
        paths = (self.ca, self.cluster_cert, self.cluster_key, self.client_cert, self.client_key)
        return {p.name: p for p in paths}

    def security(self, role: str = "client") -> Any:
        """distributed's Security for one side: `client` (steps, daskstep) or `cluster`."""
        from distributed.security import Security

        cert, key = self.pair(role)
        return Security(
            tls_ca_file=str(self.ca),
            tls_client_cert=str(cert),
            tls_client_key=str(key),
            tls_scheduler_cert=str(cert),
            tls_scheduler_key=str(key),
            tls_worker_cert=str(cert),
            tls_worker_key=str(key),
            require_encryption=True,
        )

    def pair(self, role: str) -> tuple[Path, Path]:
        if role == "cluster":
            return self.cluster_cert, self.cluster_key
        return self.client_cert, self.client_key

    def cli_options(self, folder: Path | str | None = None) -> list[str]:
        """`dask scheduler` / `dask worker` options, with the files under `folder` (a mount)."""
        where = Path(folder) if folder is not None else self.folder
        return [
            "--tls-ca-file",
            str(where / self.ca.name),
            "--tls-cert",
            str(where / self.cluster_cert.name),
            "--tls-key",
            str(where / self.cluster_key.name),
        ]


def client_environment(folder: Path | str) -> dict[str, str]:
    """What `Client(os.environ["DASK_SCHEDULER_URI"])` reads, for the files in `folder`. The
    entrypoint computes the same (it cannot import daskstep); tests hold the two together."""
    where = Path(folder)
    return {
        PREFIX + "CA_FILE": str(where / "ca.pem"),
        PREFIX + "CLIENT__CERT": str(where / "client.pem"),
        PREFIX + "CLIENT__KEY": str(where / "client-key.pem"),
        "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True",
    }


SERVER_CA_DAYS = 3650  # a server's CA is handed to its users once: it must outlast the server
SERVER_DAYS = 365
SERVER_RENEW_DAYS = 30  # a server's certificate is made anew this close to its end


@dataclass(frozen=True)
class ServerTLS:
    """A long-running server's own CA and certificate (`daskstep serve`): unlike a run's, the CA
    is kept, with its key, so that a new certificate (near its end, or for another address)
    comes from the CA the users already trust."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def cert(self) -> Path:
        return self.folder / "server.pem"

    @property
    def key(self) -> Path:
        return self.folder / "server-key.pem"

    def ensure(self, host: str) -> bool:
        """Make what is missing, expiring or not naming `host`; True when the CA is new."""
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import load_pem_private_key

        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca_key_path = self.folder / "ca-key.pem"
        new_ca = not (ca_key_path.exists() and self.ca.exists())
        if new_ca:
            ca_key, ca_cert = _ca("serve", SERVER_CA_DAYS)
            _write(ca_key_path, _key_pem(ca_key), 0o600)
            _write(self.ca, _cert_pem(ca_cert), 0o644)
        else:
            ca_key = load_pem_private_key(ca_key_path.read_bytes(), password=None)
            ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        if new_ca or not self._good_for(host, ca_cert):
            names = ("127.0.0.1", "::1", "localhost", socket.gethostname(), host)
            key, cert = _leaf(ca_key, ca_cert, "daskstep serve", names, SERVER_DAYS)
            _write(self.key, _key_pem(key), 0o600)
            _write(self.cert, _cert_pem(cert), 0o644)
        return new_ca

    def _good_for(self, host: str, ca_cert: Any) -> bool:
        import ipaddress

        from cryptography import x509

        if not (self.cert.exists() and self.key.exists()):
            return False
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        now = datetime.datetime.now(datetime.timezone.utc)
        if cert.issuer != ca_cert.subject or cert.not_valid_after_utc - now < datetime.timedelta(
            days=SERVER_RENEW_DAYS
        ):
            return False
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        try:
            return ipaddress.ip_address(host) in alt.get_values_for_type(x509.IPAddress)
        except ValueError:
            return host in alt.get_values_for_type(x509.DNSName)


def _ca(run_id: str, days: int = DAYS) -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"daskstep {run_id} CA")
    builder = _builder(name, name, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    builder = builder.add_extension(_usage(cert_sign=True), critical=True)
    return key, builder.sign(key, hashes.SHA256())


def _leaf(
    ca_key: Any, ca_cert: Any, common_name: str, names: tuple[str, ...], days: int = DAYS
) -> tuple[Any, Any]:
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = []
    for name in dict.fromkeys(n for n in names if n):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    builder = _builder(_name(common_name), ca_cert.subject, key.public_key(), days)
    builder = builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
    builder = builder.add_extension(_usage(cert_sign=False), critical=True)
    builder = builder.add_extension(
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        critical=False,
    )
    builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _name(common_name: str) -> Any:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _builder(subject: Any, issuer: Any, public_key: Any, days: int = DAYS) -> Any:
    from cryptography import x509

    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))  # clocks of batch nodes differ
        .not_valid_after(now + datetime.timedelta(days=days))
    )


def _usage(cert_sign: bool) -> Any:
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _cert_pem(cert: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return cert.public_bytes(serialization.Encoding.PEM)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Created with its mode, never readable by others even for a moment."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.chmod(path, mode)
