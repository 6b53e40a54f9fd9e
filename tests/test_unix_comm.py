"""The local backend's private sockets (daskstep/backends/unix_comm.py): distributed's own
comms over them, and who may connect. Real sockets, real processes of another uid."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from distributed.comm import connect, listen

from daskstep.backends import unix_comm

unix_comm.register()


async def _echo_server(folder: Path):
    async def handle(comm):
        while True:
            try:
                msg = await comm.read()
            except Exception:
                return
            await comm.write(msg)

    os.environ[unix_comm.SOCKETS_VARIABLE] = str(folder)
    try:
        listener = listen("unix://", handle)
        await listener.start()
    finally:
        del os.environ[unix_comm.SOCKETS_VARIABLE]
    return listener


def test_messages_and_large_frames_go_both_ways(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)

    async def main() -> None:
        listener = await _echo_server(tmp_path)
        address = listener.contact_address
        assert address.startswith("unix://" + str(tmp_path))
        path = Path(address[len("unix://") :])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        comm = await connect(address)
        big = os.urandom(1 << 20) * 40  # 40 MB: many reads on each side
        await comm.write({"op": "echo", "data": big})
        back = await comm.read()
        assert back["data"] == big
        await comm.close()
        listener.stop()
        assert not path.exists(), "a stopped listener left its socket"

    asyncio.run(main())


def _connect_as_nobody(path: str) -> str:
    """What a process of another user gets: the first bytes read, or its error."""
    code = (
        "import os, socket, sys\n"
        "os.setgid(65534); os.setuid(65534)\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1]); s.settimeout(5)\n"
        "    print('read', s.recv(64))\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another user")
def test_another_user_is_kept_out_by_the_folder_and_by_the_peer_check() -> None:
    tmp_path = Path(tempfile.mkdtemp())  # not under pytest's folder, which is root's alone

    async def main() -> None:
        listener = await _echo_server(tmp_path)
        path = listener.contact_address[len("unix://") :]
        seen = await asyncio.to_thread(_connect_as_nobody, path)
        assert seen == "PermissionError", seen  # the folder is 0700
        tmp_path.chmod(0o755)  # as if the folder's mode had been lost, and the socket's too
        os.chmod(path, 0o666)
        seen = await asyncio.to_thread(_connect_as_nobody, path)
        assert seen == "read b''", seen  # connected, then closed at once: not our uid
        comm = await connect(listener.contact_address)  # our own uid still gets in
        await comm.write("hi")
        assert await comm.read() == "hi"
        await comm.close()
        listener.stop()

    try:
        asyncio.run(main())
    finally:
        shutil.rmtree(tmp_path)


def test_a_folder_others_can_enter_or_a_long_path_is_not_used(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    assert unix_comm.usable_folder(str(tmp_path))
    tmp_path.chmod(0o755)
    assert not unix_comm.usable_folder(str(tmp_path))
    deep = tmp_path / ("d" * 90)
    deep.mkdir(mode=0o700)
    assert not unix_comm.usable_folder(str(deep))


def test_a_listener_outside_the_launcher_makes_and_removes_a_private_folder() -> None:
    async def main() -> None:
        listener = listen("unix://", lambda comm: None)
        await listener.start()
        folder = Path(listener.contact_address[len("unix://") :]).parent
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        listener.stop()
        assert not folder.exists()

    assert unix_comm.SOCKETS_VARIABLE not in os.environ
    asyncio.run(main())


def test_a_refused_connection_is_a_comm_error(tmp_path: Path) -> None:
    async def main() -> None:
        with pytest.raises(OSError):
            await connect(f"unix://{tmp_path}/none.sock", timeout=0.5)

    asyncio.run(main())


def test_the_entry_point_names_the_backend() -> None:
    from importlib.metadata import entry_points

    (point,) = entry_points(group="distributed.comm.backends", name="unix")
    assert point.load() is unix_comm.UnixBackend
    assert socket.AF_UNIX
