"""Ports for the tests' own servers (a KDC, slurmctld, a condor pool, a scheduler on a fixed
port). A port picked by binding to 0 comes from the kernel's ephemeral range, from which every
outgoing connection on the machine also draws: in the seconds before the server binds it, a
connection of the other pytest worker may take it. These come from below that range, a slice
per pytest worker, each handed out once per process, ten apart (k5test's realm takes the
ports just above its base)."""

from __future__ import annotations

import itertools
import os
import random
import socket

LOW, HIGH = 20000, 32768  # below Linux's default ip_local_port_range (32768-60999)


def _slice() -> range:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    count = max(int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")), index + 1)
    size = (HIGH - LOW) // count
    return range(LOW + index * size, LOW + (index + 1) * size - 10, 10)


_ports = _slice()
_next = itertools.count(random.randrange(len(_ports)))


def free_port() -> int:
    """A loopback TCP port nobody listens on now and no other test process will be given."""
    for _ in range(len(_ports)):
        port = _ports[next(_next) % len(_ports)]
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_ports}")
