"""A real one-node Slurm (munged, slurmctld, slurmd) for the batch tests, on loopback ports of
its own, its state under a fresh folder per session so that runs never see each other's jobs.

The node says it has 8 CPUs and oversubscribes (config_overrides), so 3 one-core workers and a
batch step fit on this 2-core machine. MinJobAge keeps ended jobs visible to `squeue -t all` for
a while, which is how the backend learns why a worker's job ended.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from ports import free_port

DAEMONS = ("/usr/sbin/munged", "/usr/sbin/slurmctld", "/usr/sbin/slurmd")

CONF = """\
ClusterName=daskstep-test
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation={base}/spool/ctld
SlurmdSpoolDir={base}/spool/d
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
SlurmdParameters=config_overrides
InactiveLimit=0
KillWait=5
MinJobAge=60
DefMemPerCPU=1024
SchedulerParameters=sched_interval=1
NodeName=localhost NodeAddr=127.0.0.1 NodeHostname=localhost CPUs=8 RealMemory={memory} \
State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def slurm_available() -> tuple[bool, str]:
    missing = [d for d in DAEMONS if not Path(d).exists()]
    if missing:
        return False, f"{', '.join(missing)} not found (apt-get install slurm-wlm munge)"
    return True, ""


@dataclass
class Slurm:
    base: Path
    conf: Path
    started: float = 0.0  # time.time() when it started

    @property
    def env(self) -> dict[str, str]:
        """What every Slurm command, and whatever runs sbatch, needs."""
        return {"SLURM_CONF": str(self.conf)}

    def run(self, *argv: str) -> str:
        return subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, check=True
        ).stdout

    def jobs(self, name: str | None = None) -> list[str]:
        """Pending or running jobs, as "ID NAME STATE" lines; only those named `name`."""
        argv = ["squeue", "-h", "-o", "%i %j %T"]
        if name is not None:
            argv += ["--name", name]
        return self.run(*argv).splitlines()

    def jobs_of_run(self, marker: str) -> list[str]:
        """Every queued job whose name contains `marker` (a run id)."""
        return [line for line in self.jobs() if marker in line.split()[1]]

    def pids(self) -> list[int]:
        return [int((self.base / f).read_text()) for f in PID_FILES if (self.base / f).exists()]


PID_FILES = ("slurmd.pid", "slurmctld.pid", "munge/munged.pid")


def _memory_mib() -> int:
    return max(1024, psutil.virtual_memory().total // 2**20 - 1024)


def _start(base: Path) -> Slurm:
    munge = base / "munge"
    for folder in (munge, base / "spool" / "ctld", base / "spool" / "d", base / "log"):
        folder.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # munged refuses a socket path not traversable by all, or not 0755
    munge.chmod(0o755)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    conf = base / "slurm.conf"
    conf.write_text(
        CONF.format(base=base, ctld_port=free_port(), d_port=free_port(), memory=_memory_mib())
    )
    subprocess.run(
        [
            "munged",
            f"--key-file={key}",
            f"--socket={munge}/munge.socket.2",
            f"--pid-file={munge}/munged.pid",
            f"--log-file={munge}/munged.log",
            f"--seed-file={munge}/munged.seed",
        ],
        check=True,
    )
    slurm = Slurm(base, conf, time.time())
    env = {**os.environ, **slurm.env}
    subprocess.run(["slurmctld", "-c"], env=env, check=True)
    subprocess.run(["slurmd", "-N", "localhost"], env=env, check=True)
    deadline = time.monotonic() + 30
    while "idle" not in slurm.run("sinfo", "-h", "-o", "%T"):
        if time.monotonic() > deadline:
            log = (base / "log" / "slurmctld.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Slurm did not become idle within 30 s:\n{log}")
        time.sleep(0.1)
    return slurm


def _stop(slurm: Slurm) -> None:
    """Cancel what is queued and wait until the queue and the job step daemons are gone (a
    slurmstepd whose slurmd is gone stays forever), stop the daemons, and wait until they are
    gone too (a zombie counts as gone: the daemons daemonized away from us)."""
    with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
        slurm.run("scancel", "--full", "--user", "root")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (slurm.jobs() or _stepds(slurm.started)):
            time.sleep(0.1)
    pids = slurm.pids()
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in [*pids, *(p.pid for p in _stepds(slurm.started))]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stepds(since: float) -> list[psutil.Process]:
    """The job step daemons started since `since` (ours: the tests' Slurm is the only one)."""
    found = []
    for p in psutil.process_iter(["name", "create_time"]):
        if p.info["name"] == "slurmstepd" and p.info["create_time"] >= since - 1:
            with contextlib.suppress(psutil.Error):
                if p.status() != psutil.STATUS_ZOMBIE:
                    found.append(p)
    return found


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    from conftest import require

    available, reason = slurm_available()
    require(available, reason)
    base = Path(tempfile.mkdtemp(prefix="daskstep-slurm-", dir="/var/tmp"))
    try:
        cluster = _start(base)
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        yield cluster
    finally:
        _stop(cluster)
        shutil.rmtree(base, ignore_errors=True)
