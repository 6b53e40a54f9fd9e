"""Where the worker jobs reach the scheduler. A farm's compute nodes cannot reach 127.0.0.1 on
the submit node, so without a choice in the site file the scheduler listens on the address
this host reaches the batch system's controller at (slurmctld, the HTCondor collector): the
network the batch system itself uses. The kernel's routing table answers that, with no packet
sent (a UDP socket's connect only looks the route up)."""

from __future__ import annotations

import socket
from typing import Any

from daskstep.errors import InputError, Problem


def interface_address(name: str) -> str:
    """The IPv4 address of a network interface of this host (as dask-jobqueue's `interface`);
    one line naming the interfaces there are, if not."""
    import psutil

    interfaces = psutil.net_if_addrs()
    for address in interfaces.get(name, []):
        if address.family == socket.AF_INET:
            return str(address.address)
    known = ", ".join(sorted(n for n, a in interfaces.items() if any(
        x.family == socket.AF_INET for x in a)))  # fmt: skip
    why = "has no IPv4 address" if name in interfaces else "is not an interface of this host"
    raise InputError([Problem("interface", f"{name!r} {why}; use one of {known}")])


def route_source(host: str, port: int) -> tuple[str, str] | None:
    """(our address, the interface it is on) toward `host`: what a connection from here to
    it would come from; None if there is no route."""
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)
    except OSError:
        return None
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            try:
                probe.connect(address)
            except OSError:
                continue
            ours = probe.getsockname()[0]
            return ours, interface_of(ours)
    return None


def interface_of(address: str) -> str:
    import psutil

    for name, addresses in psutil.net_if_addrs().items():
        if any(a.address == address for a in addresses):
            return name
    return "?"


def scheduler_host(system: Any, say: Any) -> str:
    """The site's `scheduler_host`, else its `interface`'s address, else dask-jobqueue's
    (`scheduler-options: {host: ...}`, `interface`), else the address toward the batch
    system's controller; loopback, said, when even that cannot be found."""
    import dask.config

    site = system.site
    configured = dask.config.get(f"jobqueue.{system.name}.scheduler-options", {}) or {}
    if site.scheduler_host:
        return str(site.scheduler_host)
    if site.interface:
        return interface_address(site.interface)
    if configured.get("host"):
        return str(configured["host"])
    interface = configured.get("interface") or dask.config.get(
        f"jobqueue.{system.name}.interface", None
    )
    if interface:
        return interface_address(str(interface))
    controller = system.controller()
    found = route_source(*controller) if controller else None
    if found is None:
        say(
            "note: the scheduler listens on 127.0.0.1, which only worker jobs on this "
            "node reach; set scheduler_host or interface in --site for a farm of several nodes"
        )
        return "127.0.0.1"
    address, name = found
    what = system.controller_name
    say(
        f"the scheduler listens on {address} ({name}), where this host reaches {what} at "
        f"{controller[0]}:{controller[1]}; set scheduler_host or interface in --site to choose"
    )
    return address
