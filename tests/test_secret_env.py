"""A secret given as an environment variable is read, then gone from every process's environment
block: daskstep's own (after its re-exec) and its children's, even between fork and exec."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import daskstep

pytestmark = pytest.mark.integration

SECRET = "c2VjcmV0LXBhc3NwaHJhc2UK"  # base64, as REANA stores VOMSPROXY_PASS

# The step reads the environment block of `daskstep run` itself (its DASKSTEP_PARENT_PID).
PEEK = """
import os
block = open(f"/proc/{os.environ['DASKSTEP_PARENT_PID']}/environ", "rb").read()
print("controller environ has it:", b"VOMSPROXY_PASS" in block)
print("step environ has it:", "VOMSPROXY_PASS" in os.environ)
"""


def test_the_run_re_executes_without_the_secret_variable(tmp_path: Path) -> None:
    (tmp_path / "peek.py").write_text(PEEK)
    (tmp_path / "reana.yaml").write_text(
        "workflow:\n  type: serial\n  specification:\n    steps:\n"
        "      - commands: [python peek.py]\n"
    )
    run = daskstep(
        "run", str(tmp_path / "reana.yaml"), env={**os.environ, "VOMSPROXY_PASS": SECRET}
    )
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert "controller environ has it: False" in out
    assert "step environ has it: False" in out
    assert SECRET not in out + err


def test_the_handed_over_value_still_reaches_the_secrets_check(tmp_path: Path) -> None:
    """Only the environment has VOMSPROXY_PASS; a bad one is reported, so it arrived."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, text in (("usercert.pem", "cert"), ("userkey.pem", "key"), ("VONAME", "cms")):
        (secrets / name).write_text(text)
    (tmp_path / "reana.yaml").write_text(
        "workflow:\n  type: serial\n  resources:\n    voms_proxy: true\n"
        "  specification:\n    steps:\n      - commands: [touch ran]\n"
    )
    env = {**os.environ, "VOMSPROXY_PASS": "not base64!"}
    run = daskstep("run", str(tmp_path / "reana.yaml"), "--secrets", str(secrets), env=env)
    _out, err = run.communicate(timeout=60)
    assert run.returncode == 2, err
    assert "error: secrets.VOMSPROXY_PASS: is not base64" in err
    assert "not base64!" not in err
    assert not (tmp_path / "ran").exists()
