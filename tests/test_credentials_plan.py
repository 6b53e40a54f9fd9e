"""How `daskstep run` reads REANA-named secrets and plans the credential sidecars (no servers)."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest

from daskstep.credentials import Secrets, plan
from daskstep.errors import InputError
from daskstep.secret_env import strip_secrets


def secrets_dir(tmp_path: Path, **files: str) -> Path:
    folder = tmp_path / "secrets"
    folder.mkdir()
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text)
    return folder


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_kerberos_from_the_secrets_folder(tmp_path: Path) -> None:
    folder = secrets_dir(tmp_path, CERN_USER="alice\n", CERN_KEYTAB=".keytab\n", __keytab="kt")
    [sidecar] = plan(True, False, Secrets(folder, {}), tmp_path / "creds")
    assert option(sidecar.argv, "--principal") == "alice"
    assert option(sidecar.argv, "--keytab") == str(folder / ".keytab")
    assert sidecar.value == f"FILE:{tmp_path / 'creds' / 'krb5cc'}"
    assert sidecar.variable == "KRB5CCNAME"


def test_small_values_may_come_from_the_environment_but_files_win(tmp_path: Path) -> None:
    folder = secrets_dir(tmp_path, CERN_KEYTAB="kt", kt="bytes")
    env = {"CERN_USER": "bob@CERN.CH", "CERN_KEYTAB": "other"}
    [sidecar] = plan(True, False, Secrets(folder, env), tmp_path / "creds")
    assert option(sidecar.argv, "--principal") == "bob@CERN.CH"
    assert option(sidecar.argv, "--keytab") == str(folder / "kt")


def test_every_missing_secret_is_reported_at_once(tmp_path: Path) -> None:
    folder = secrets_dir(tmp_path)
    with pytest.raises(InputError) as e:
        plan(True, True, Secrets(folder, {}), tmp_path / "creds")
    fields = [p.path for p in e.value.problems]
    assert fields == [
        "secrets.CERN_USER",
        "secrets.CERN_KEYTAB",
        "secrets.usercert.pem",
        "secrets.userkey.pem",
        "secrets.VONAME",
    ]
    assert all(str(folder) in p.message for p in e.value.problems)


def test_a_secret_name_cannot_leave_the_folder(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("not a keytab")
    folder = secrets_dir(tmp_path, CERN_USER="alice", CERN_KEYTAB="../outside")
    with pytest.raises(InputError, match=re.escape("secrets.CERN_KEYTAB: names ../outside")):
        plan(True, False, Secrets(folder, {}), tmp_path / "creds")


@pytest.mark.parametrize("encoded_text", ["s3cret pass\n", "s3cret pass"])
def test_the_passphrase_is_decoded_and_only_goes_to_stdin(tmp_path: Path, encoded_text) -> None:
    encoded = base64.b64encode(encoded_text.encode()).decode()
    folder = secrets_dir(
        tmp_path,
        usercert__pem="cert",
        userkey__pem="key",
        VONAME="cms:/cms/Role=production",
        VOMSPROXY_PASS=encoded + "\n",
    )
    [sidecar] = plan(False, True, Secrets(folder, {}), tmp_path / "creds")
    assert sidecar.stdin_secret == b"s3cret pass"
    assert option(sidecar.argv, "--passphrase-file") == "/dev/stdin"
    assert option(sidecar.argv, "--voms") == "cms:/cms/Role=production"
    assert option(sidecar.argv, "--valid") == "12:00"
    # the sidecar reads a private 0600 copy of the key, removed however it exits
    assert option(sidecar.argv, "--key") == str(tmp_path / "creds" / "userkey.pem")
    assert sidecar.copies == ((folder / "userkey.pem", tmp_path / "creds" / "userkey.pem"),)
    text = " ".join(sidecar.argv)
    assert "s3cret" not in text and encoded not in text
    assert text.count("--remove-on-exit") == 3


def test_a_user_supplied_proxy_is_watched(tmp_path: Path) -> None:
    folder = secrets_dir(tmp_path, VOMSPROXY_FILE="x509up_u1000", x509up_u1000="proxy")
    [sidecar] = plan(False, True, Secrets(folder, {}), tmp_path / "creds")
    assert option(sidecar.argv, "--watch") == str(tmp_path / "creds" / "x509up")
    assert sidecar.copies == ((folder / "x509up_u1000", tmp_path / "creds" / "x509up"),)
    assert sidecar.value == str(tmp_path / "creds" / "x509up")


def test_children_never_inherit_the_passphrase_variable() -> None:
    env = {"VOMSPROXY_PASS": "c2VjcmV0", "VONAME": "cms", "PATH": "/bin"}
    assert strip_secrets(env) == {"VONAME": "cms", "PATH": "/bin"}


def test_secrets_folder_defaults(tmp_path: Path) -> None:
    assert Secrets.locate(str(tmp_path), {}).folder == tmp_path
    assert Secrets.locate(None, {"DASKSTEP_SECRETS": str(tmp_path)}).folder == tmp_path
