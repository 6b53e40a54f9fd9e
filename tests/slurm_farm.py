"""A real Slurm across hosts of the tests' own (hosts.py): slurmctld on the controller's host
`ctl`, a slurmd on each compute host `n1` and `n2`, one munged whose socket all of them reach
through the shared file system. Slurm's commands (sbatch, squeue, and `daskstep run`) run on
`ctl` too, so nothing reaches the subnet from the machine's own namespace.

Each node says it has 2 CPUs, and the scheduler places a job on the least loaded node
(CR_LLN), so two one-core worker jobs land on both hosts and a batch step still fits.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from hosts import Hosts, hosts, hosts_available
from slurm import _alive, slurm_available

COMPUTE = ("n1", "n2")

CONF = """\
ClusterName=daskstep-farm
SlurmctldHost={hostname}({ctl_address})
SlurmctldPort=26817
SlurmdPort=26818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={base}/munge/munge.socket.2
CredType=cred/munge
StateSaveLocation={base}/spool/ctld
SlurmdSpoolDir={base}/spool/%n
SlurmctldPidFile={base}/slurmctld.pid
SlurmdPidFile={base}/slurmd-%n.pid
SlurmctldLogFile={base}/log/slurmctld.log
SlurmdLogFile={base}/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory,CR_LLN
ReturnToService=2
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=60
DefMemPerCPU=512
SchedulerParameters=sched_interval=1
NodeName=n1 NodeAddr={n1_address} CPUs=2 RealMemory=2000 State=UNKNOWN
NodeName=n2 NodeAddr={n2_address} CPUs=2 RealMemory=2000 State=UNKNOWN
PartitionName=debug Nodes=n1,n2 Default=YES MaxTime=INFINITE State=UP
"""


@dataclass
class Farm:
    hosts: Hosts
    base: Path
    started: float

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.base / "slurm.conf")}

    def run(self, *argv: str) -> str:
        """A Slurm command, on the controller's host."""
        done = self.hosts.run("ctl", *argv, env={**os.environ, **self.env})
        if done.returncode:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout

    def jobs_of_run(self, marker: str) -> list[str]:
        lines = self.run("squeue", "-h", "-o", "%i %j %T").splitlines()
        return [line for line in lines if marker in line.split()[1]]

    def stepds(self) -> list[psutil.Process]:
        """The job step daemons on our compute hosts, told by their network namespace."""
        ours = {os.stat(f"/run/netns/{self.hosts.netns(h)}").st_ino for h in COMPUTE}
        found = []
        for p in psutil.process_iter(["name"]):
            if p.info["name"] != "slurmstepd":
                continue
            with contextlib.suppress(OSError, psutil.Error):
                if os.stat(f"/proc/{p.pid}/ns/net").st_ino in ours:
                    found.append(p)
        return found


def _pids(base: Path) -> list[int]:
    files = ["munge/munged.pid", "slurmctld.pid", *(f"slurmd-{n}.pid" for n in COMPUTE)]
    return [int((base / f).read_text()) for f in files if (base / f).exists()]


def start_farm(made: Hosts, base: Path) -> Farm:
    munge = base / "munge"
    for folder in (munge, base / "spool" / "ctld", base / "log"):
        folder.mkdir(parents=True, exist_ok=True)
    for node in COMPUTE:
        (base / "spool" / node).mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    munge.chmod(0o755)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    addresses = {f"{h}_address": made.addresses[h] for h in ("ctl", *COMPUTE)}
    conf = CONF.format(base=base, hostname=socket.gethostname(), **addresses)
    (base / "slurm.conf").write_text(conf)
    subprocess.run(
        ["munged", f"--key-file={key}", f"--socket={munge}/munge.socket.2",
         f"--pid-file={munge}/munged.pid", f"--log-file={munge}/munged.log",
         f"--seed-file={munge}/munged.seed"],
        check=True,
    )  # fmt: skip
    farm = Farm(made, base, time.time())
    env = {**os.environ, **farm.env}
    made.run("ctl", "slurmctld", "-c", env=env, check=True)
    for node in COMPUTE:
        made.run(node, "slurmd", "-N", node, env=env, check=True)
    deadline = time.monotonic() + 60
    while farm.run("sinfo", "-h", "-o", "%T %D").split() != ["idle", "2"]:
        if time.monotonic() > deadline:
            log = (base / "log" / "slurmctld.log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the farm's Slurm did not get 2 idle nodes in 60 s:\n{log}")
        time.sleep(0.2)
    return farm


def stop_farm(farm: Farm) -> None:
    with contextlib.suppress(RuntimeError, FileNotFoundError):
        farm.run("scancel", "--full", "--user", "root")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (farm.jobs_of_run("") or farm.stepds()):
            time.sleep(0.2)
    pids = _pids(farm.base)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    for pid in [*pids, *(p.pid for p in farm.stepds())]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)


@pytest.fixture(scope="module")
def slurm_farm() -> Iterator[Farm]:
    from conftest import require

    for available, reason in (hosts_available(), slurm_available()):
        require(available, reason)
    base = Path(tempfile.mkdtemp(prefix="daskstep-farm-", dir="/var/tmp"))
    try:
        with hosts("ctl", *COMPUTE) as made:
            farm = start_farm(made, base)
            try:
                yield farm
            finally:
                stop_farm(farm)
    finally:
        shutil.rmtree(base, ignore_errors=True)
