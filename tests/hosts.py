"""Hosts of the tests' own: network namespaces, each with its own address on a private subnet,
joined by veth pairs to a bridge that lives in a namespace of its own. Every host is a
namespace, the controller's included, so the machine's own network sends nothing to the subnet
and nothing on it leaves the machine. The hosts share the file system, as a farm's nodes share
theirs. `cut(host)` takes one host's link down (a partition), `restore(host)` brings it back.

Programs run on a host through `nsenter --net=/run/netns/NAME` (not `ip netns exec`, which
also remounts /sys, so that /sys/fs/cgroup is gone inside and slurmd fails).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field

SUBNET = "10.213.0"  # private to the namespaces: nothing routes it anywhere else


def hosts_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "network namespaces need root"
    missing = [tool for tool in ("ip", "nsenter") if shutil.which(tool) is None]
    if missing:
        return False, f"{', '.join(missing)} not found (apt-get install iproute2 util-linux)"
    return True, ""


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, text=True)


@dataclass
class Hosts:
    """Hosts by name (the first is the controller's); their namespaces are `prefix-name`."""

    prefix: str
    names: list[str]
    addresses: dict[str, str] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-net"

    def netns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def argv(self, host: str, *argv: str) -> list[str]:
        """A command line that runs `argv` on `host`."""
        return ["nsenter", f"--net=/run/netns/{self.netns(host)}", *argv]

    def run(self, host: str, *argv: str, **options) -> subprocess.CompletedProcess:
        options.setdefault("capture_output", True)
        options.setdefault("text", True)
        return subprocess.run(self.argv(host, *argv), **options)

    def popen(self, host: str, *argv: str, **options) -> subprocess.Popen:
        return subprocess.Popen(self.argv(host, *argv), **options)

    def _link(self, host: str) -> str:
        return f"v{self.names.index(host)}{self.prefix[-8:]}"[:15]

    def cut(self, host: str) -> None:
        """The host drops off the network: its link to the bridge goes down."""
        _ip("netns", "exec", self.bridge, "ip", "link", "set", self._link(host), "down")

    def restore(self, host: str) -> None:
        _ip("netns", "exec", self.bridge, "ip", "link", "set", self._link(host), "up")

    def start(self) -> None:
        _ip("netns", "add", self.bridge)
        _ip("netns", "exec", self.bridge, "ip", "link", "add", "br0", "type", "bridge")
        _ip("netns", "exec", self.bridge, "ip", "link", "set", "br0", "up")
        for i, host in enumerate(self.names, start=1):
            ns, link = self.netns(host), self._link(host)
            _ip("netns", "add", ns)
            # one end on the bridge, the other in the host, both made where they belong: no
            # name is ever taken in the machine's own namespace
            _ip("link", "add", link, "netns", self.bridge, "type", "veth",
                "peer", "name", "e0", "netns", ns)  # fmt: skip
            _ip("netns", "exec", self.bridge, "ip", "link", "set", link, "master", "br0")
            _ip("netns", "exec", self.bridge, "ip", "link", "set", link, "up")
            self.addresses[host] = f"{SUBNET}.{i}"
            _ip("netns", "exec", ns, "ip", "addr", "add", f"{SUBNET}.{i}/24", "dev", "e0")
            _ip("netns", "exec", ns, "ip", "link", "set", "e0", "up")
            _ip("netns", "exec", ns, "ip", "link", "set", "lo", "up")

    def stop(self) -> None:
        """Each host's namespace, then the bridge's: the veth pairs go with them."""
        for ns in [*(self.netns(h) for h in self.names), self.bridge]:
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("netns", "del", ns)


@contextlib.contextmanager
def hosts(*names: str) -> Iterator[Hosts]:
    """Namespace hosts for as long as the block runs; names unique to this process."""
    made = Hosts(f"ds{os.getpid() % 100000}", list(names))
    try:
        made.start()
        yield made
    finally:
        made.stop()
