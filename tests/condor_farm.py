"""A real HTCondor pool across hosts of the tests' own (hosts.py): the central manager and the
submit node (collector, negotiator, schedd) on `ctl`, an execute node (startd) on each of `n1`
and `n2`, each daemon listening on its own host's address only. The pool is `nobody`'s, as the
one-host pool in htcondor.py; its binaries, its job venv and its folders are shared by the
hosts through the file system, as a farm shares its home and software areas.

Every host's name is its own (NETWORK_HOSTNAME), though the namespaces share the machine's, so
the collector holds one machine per host and a job's RemoteHost says where it ran.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hosts import SUBNET, Hosts, hosts, hosts_available
from htcondor import (
    FAST_CONFIG,
    POOL_GID,
    POOL_UID,
    HTCondorPool,
    ensure_installed,
)

EXECUTE = ("n1", "n2")
DAEMONS = {"ctl": "MASTER, COLLECTOR, NEGOTIATOR, SCHEDD"}  # the rest: MASTER, STARTD


class HTCondorFarm(HTCondorPool):
    """The pool on `hosts`: one condor_master per host, each with a config of its own; the
    tools (and `daskstep run`) run on `ctl` with ctl's config, as on a submit node."""

    def __init__(self, made: Hosts, root: Path | None = None) -> None:
        super().__init__(cpus=2, memory_mb=2000, root=root)
        self.hosts = made
        self.masters: dict[str, subprocess.Popen] = {}

    def user_argv(self, argv: list[str | Path], config: Path | None = None) -> list[str]:
        return self.hosts.argv("ctl", *super().user_argv(argv, config))

    def _host_config(self, host: str) -> Path:
        return self.dir / "etc" / f"condor_config.{host}"  # type: ignore[operator]

    def _write_config(self) -> None:
        ctl = self.hosts.addresses["ctl"]
        port = 9618  # every host has its own: nothing else listens on the subnet
        for host in self.hosts.names:
            local = self.dir / f"local-{host}"  # type: ignore[operator]
            for sub in ("", "log", "spool", "execute"):
                (local / sub).mkdir(exist_ok=True)
                os.chown(local / sub, POOL_UID, POOL_GID)
            self._host_config(host).write_text(
                f"""\
RELEASE_DIR = {self.root}/usr
LIB = $(RELEASE_DIR)/lib/condor
LIBEXEC = $(RELEASE_DIR)/libexec/condor
LOCAL_DIR = {local}
LOCAL_CONFIG_FILE =
LOCAL_CONFIG_DIR =
MAIL = /bin/true
DOCKER =

DAEMON_LIST = {DAEMONS.get(host, "MASTER, STARTD")}
NETWORK_HOSTNAME = {host}
NETWORK_INTERFACE = {self.hosts.addresses[host]}
BIND_ALL_INTERFACES = False
CONDOR_HOST = {ctl}
COLLECTOR_HOST = $(CONDOR_HOST):{port}
USE_SHARED_PORT = False
UID_DOMAIN = farm
FILESYSTEM_DOMAIN = farm
TRUST_UID_DOMAIN = True
use SECURITY: HOST_BASED
ALLOW_READ = *
ALLOW_WRITE = {SUBNET}.*
ALLOW_DAEMON = {SUBNET}.*
ALLOW_NEGOTIATOR = {SUBNET}.*
ALLOW_ADMINISTRATOR = {SUBNET}.*
NUM_CPUS = {self.cpus}
MEMORY = {self.memory_mb}
# spread the jobs, as CR_LLN does on the Slurm farm: the least loaded machine first, and a
# schedd may not put a second job on a claim's leftovers without asking the negotiator
NEGOTIATOR_PRE_JOB_RANK = Cpus
CLAIM_PARTITIONABLE_LEFTOVERS = False
{FAST_CONFIG}"""
            )
        self.config.write_text(self._host_config("ctl").read_text())

    def start(self, timeout: float = 60) -> HTCondorFarm:
        """Masters on every host; return once the collector lists both execute nodes."""
        began = time.monotonic()
        self._prepare()
        self._write_config()
        for path in (self.dir, self.dir / "etc", *(self.dir / "etc").iterdir()):
            path.chmod(0o755)
        try:
            for host in self.hosts.names:
                env = {**self.env, "CONDOR_CONFIG": str(self._host_config(host))}
                master = [self.root / "usr/sbin/condor_master", "-f"]
                argv = HTCondorPool.user_argv(self, master, self._host_config(host))
                with open(self.dir / f"master-{host}.out", "wb") as out:
                    self.masters[host] = subprocess.Popen(
                        self.hosts.argv(host, *argv), env=env, cwd=self.home,
                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )  # fmt: skip
            self.master = self.masters["ctl"]
            while not self._ready():
                if any(m.poll() is not None for m in self.masters.values()):
                    raise RuntimeError(f"a condor_master exited{self.logs()}")
                if time.monotonic() - began > timeout:
                    raise TimeoutError(f"the HTCondor farm did not come up{self.logs()}")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def machines(self) -> list[str]:
        return sorted(self.run([self.condor_status, "-af", "Machine"], timeout=30).stdout.split())

    def _ready(self) -> bool:
        return sorted(set(self.machines())) == list(EXECUTE) and (
            self.run([self.condor_q], timeout=30).returncode == 0
        )

    def logs(self, lines: int = 30) -> str:
        if self.dir is None:
            return ""
        text = ""
        logs = sorted(self.dir.glob("local-*/log/*Log"))
        for path in [*sorted(self.dir.glob("master-*.out")), *logs]:
            try:
                tail = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            text += f"\n--- {path.relative_to(self.dir)}\n" + "\n".join(tail)
        return text

    def stop(self, timeout: float = 30) -> None:
        for master in self.masters.values():
            if master.poll() is None:
                master.terminate()
        deadline = time.monotonic() + timeout
        for master in self.masters.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                master.wait(max(0.1, deadline - time.monotonic()))
        super().stop(timeout)
        for master in self.masters.values():
            master.kill()
            master.wait()


@pytest.fixture(scope="module")
def condor_farm() -> Iterator[HTCondorFarm]:
    from conftest import require

    available, reason = hosts_available()
    require(available, reason)
    try:
        root = ensure_installed()
    except Exception as exc:
        require(False, f"HTCondor could not be installed: {exc}")
    with hosts("ctl", *EXECUTE) as made, HTCondorFarm(made, root) as farm:
        yield farm
