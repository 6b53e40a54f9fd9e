"""A real MIT KDC (k5test) on 127.0.0.1 with short tickets, so renewal shows within seconds."""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from ports import free_port

REALM = "DASKSTEP.TEST"


def kdc_available() -> tuple[bool, str]:
    """Whether k5test and the MIT KDC tools are here, and what is missing if not."""
    if importlib.util.find_spec("k5test") is None:
        return False, "k5test is not installed (pip install k5test)"
    for tool in ("kinit", "klist", "krb5-config"):
        if shutil.which(tool) is None:
            return False, f"{tool} not found (apt-get install krb5-user libkrb5-dev)"
    for tool in ("krb5kdc", "kadmin.local", "kdb5_util"):
        if not (shutil.which(tool) or Path("/usr/sbin", tool).exists()):
            return False, f"{tool} not found (apt-get install krb5-kdc krb5-admin-server)"
    return True, ""


@dataclass
class Kdc:
    realm: Any  # k5test.K5Realm
    name: str
    krb5_config: str

    def principal(self, user: str, folder: Path) -> tuple[str, Path]:
        """A new principal with 1-minute, 5-minute-renewable tickets, and its keytab."""
        principal = f"{user}@{self.name}"
        self.realm.addprinc(principal)
        self.realm.run_kadminl(f"modprinc -maxrenewlife 5m -maxlife 1m {principal}")
        keytab = folder / f"{user}.keytab"
        self.realm.extract_keytab(principal, str(keytab))
        return principal, keytab


def start_kdc() -> Kdc:
    """Start the realm; the caller stops it with `kdc.realm.stop()`."""
    import k5test

    port = free_port()
    listen = f"127.0.0.1:{port}"
    realm = k5test.K5Realm(
        realm=REALM,
        portbase=port,
        get_creds=False,
        krb5_conf={
            "libdefaults": {
                "rdns": "false",
                "dns_canonicalize_hostname": "false",
                "udp_preference_limit": "1",
                "clockskew": "5",
            }
        },
        kdc_conf={
            "realms": {
                "$realm": {
                    "max_life": "1m",
                    "max_renewable_life": "5m",
                    "kdc_listen": listen,
                    "kdc_tcp_listen": listen,
                    "kdc_ports": None,
                    "kdc_tcp_ports": None,
                }
            }
        },
    )
    realm.run_kadminl(f"modprinc -maxrenewlife 5m krbtgt/{REALM}@{REALM}")
    return Kdc(realm=realm, name=REALM, krb5_config=realm.env["KRB5_CONFIG"])


@pytest.fixture(scope="session")
def kdc() -> Iterator[Kdc]:
    """One realm for the session; skipped (or failed in CI) without the MIT KDC tools."""
    from conftest import require

    ok, reason = kdc_available()
    require(ok, reason)
    server = start_kdc()
    yield server
    server.realm.stop()
