"""`daskstep sidecar reaper` as a child of a backend: started before the first thing it must
clean, it holds our pipe on its stdin and cleans when that closes, which happens however we
end, SIGKILL included. A normal stop cleans first and then lets it go."""

from __future__ import annotations

import contextlib
import subprocess
import sys

from daskstep.secret_env import child_env


class Reaper:
    def __init__(self, *what: str) -> None:
        """`what`: the reaper's options naming the run's things (--label …, --kubernetes …)."""
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "daskstep", "sidecar", "reaper", *what],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=child_env(),
            start_new_session=True,  # a Ctrl-C to our group must not take it first
        )

    def let_go(self) -> None:
        """After the backend cleaned up itself: the reaper finds nothing and exits."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def dismiss(self) -> None:
        """When nothing is left for it to do (the run is recorded): ended at once, so the
        prompt waits neither for its start-up nor for its look around."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait()
        with contextlib.suppress(OSError):
            proc.stdin.close()  # type: ignore[union-attr]
