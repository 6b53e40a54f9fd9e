"""`unix://`: distributed's comms over Unix domain sockets, for the local backend's own traffic
(scheduler to workers, worker to worker).

Why: on one host, TLS protects nothing a private socket does not, and it cost a transfer-heavy
analysis a third of its time (each 16 KB record encrypted, decrypted and read by one Python call:
1.3 GB/s between two workers, where plain sockets move 2.8 GB/s). What TLS gives the cluster on
one host is that no other user can reach it; here that is the kernel's word, three times over:
the sockets live in the launcher's private folder (0700), each is 0600, and a listener accepts
only peers of its own uid (SO_PEERCRED). The scheduler keeps its TLS listener for the analysis's
`Client`, which therefore needs nothing of daskstep.

Registered for distributed in the launcher's processes (and as the `distributed.comm.backends`
entry point `unix`, so a task's own client can reach its peers directly).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import struct
import tempfile
import weakref
from typing import Any

import dask
from distributed.comm import registry, tcp
from distributed.comm.core import BaseListener, Comm, CommClosedError, Connector
from tornado import netutil
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpserver import TCPServer

SCHEME = "unix"
PREFIX = f"{SCHEME}://"
SOCKETS_VARIABLE = "DASKSTEP_SOCKETS"  # the private folder a listener without a path binds in
MAX_PATH = 100  # sun_path holds 108 bytes on Linux; leave room for the name's growth
_names = itertools.count()


def usable_folder(folder: str) -> bool:
    """Whether sockets can live here: a path short enough for sun_path, private to us."""
    probe = os.path.join(folder, f"{os.getpid()}-{2**20}.sock")
    return len(probe.encode()) <= MAX_PATH and (os.stat(folder).st_mode & 0o077) == 0


class UnixComm(tcp.TCP):
    """distributed's stream comm on a Unix socket; only TCP's socket options are left out
    (TCP_KEEP* fail there, and distributed would log that at every connection)."""

    def __init__(
        self, stream: IOStream, local_addr: str, peer_addr: str, deserialize: bool = True
    ) -> None:
        Comm.__init__(self, deserialize=deserialize)
        self._closed = False
        self._local_addr = local_addr
        self._peer_addr = peer_addr
        self.stream = stream
        self._finalizer = weakref.finalize(self, self._get_finalizer())
        self._finalizer.atexit = False  # type: ignore[misc]
        self._extra: dict = {}
        stream.set_close_callback(functools.partial(tcp._close_comm, weakref.ref(self)))


def _peer(sock: socket.socket) -> tuple[int, int]:
    """The connected process's (pid, uid), as the kernel saw them at connect()."""
    pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    return pid, uid


class UnixConnector(Connector):
    async def connect(self, address: str, deserialize: bool = True, **connection_args: Any) -> Comm:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream = IOStream(sock, max_buffer_size=tcp.MAX_BUFFER_SIZE)
        try:
            await stream.connect(address)
        except StreamClosedError as e:
            tcp.convert_stream_closed_error(self, e)
        local = f"{PREFIX}pid-{os.getpid()}"
        return UnixComm(stream, local, PREFIX + address, deserialize)


class UnixListener(BaseListener):
    prefix = PREFIX

    def __init__(
        self,
        loc: str,
        comm_handler: Any,
        deserialize: bool = True,
        allow_offload: bool = True,
        **connection_args: Any,
    ) -> None:
        super().__init__()
        self.own_folder = None if loc or os.environ.get(SOCKETS_VARIABLE) else _new_folder()
        self.path = loc or _new_path(self.own_folder)
        self.comm_handler = comm_handler
        self.deserialize = deserialize
        self.allow_offload = allow_offload
        self.server: TCPServer | None = None

    async def start(self) -> None:
        backlog = int(dask.config.get("distributed.comm.socket-backlog"))
        sock = netutil.bind_unix_socket(self.path, mode=0o600, backlog=backlog)
        self.server = TCPServer(max_buffer_size=tcp.MAX_BUFFER_SIZE)
        self.server.handle_stream = self._handle_stream  # type: ignore[method-assign]
        self.server.add_socket(sock)

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.stop()
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            if self.own_folder:
                with contextlib.suppress(OSError):
                    os.rmdir(self.own_folder)

    async def _handle_stream(self, stream: IOStream, address: Any) -> None:
        if self.server is None:  # stopped since it was accepted: see distributed's TCP
            stream.close()
            return
        try:
            pid, uid = _peer(stream.socket)  # type: ignore[arg-type]
        except OSError:
            stream.close()
            return
        if uid != os.getuid():  # the folder's mode already keeps others out; twice is cheap
            stream.close()
            return
        comm = UnixComm(stream, self.listen_address, f"{PREFIX}pid-{pid}", self.deserialize)
        comm.allow_offload = self.allow_offload
        try:
            await self.on_connection(comm)
        except CommClosedError:  # closed before the handshake was done
            return
        await self.comm_handler(comm)

    @property
    def listen_address(self) -> str:
        return PREFIX + self.path

    @property
    def contact_address(self) -> str:
        return PREFIX + self.path


def _new_folder() -> str:
    """Outside the launcher (a listener of a test or a user's): a private folder of its own."""
    return tempfile.mkdtemp(prefix="daskstep-")


def _new_path(folder: str | None) -> str:
    folder = folder or os.environ[SOCKETS_VARIABLE]
    return os.path.join(folder, f"{os.getpid()}-{next(_names)}.sock")


class UnixBackend(registry.Backend):
    def get_connector(self) -> Connector:
        return UnixConnector()

    def get_listener(
        self, loc: str, handle_comm: Any, deserialize: bool, **connection_args: Any
    ) -> BaseListener:
        return UnixListener(loc, handle_comm, deserialize, **connection_args)

    def get_address_host(self, loc: str) -> str:
        return "127.0.0.1"  # one host: the one every process of the local backend is on

    def resolve_address(self, loc: str) -> str:
        return loc

    def get_local_address_for(self, loc: str) -> str:
        return PREFIX


def register() -> None:
    """In processes where the package's entry points may not be installed (a source tree)."""
    registry.backends.setdefault(SCHEME, UnixBackend())
