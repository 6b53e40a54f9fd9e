"""The Docker variants of bench/cluster_start.py (`--backend docker --image IMAGE`):

- daskstep docker   DockerBackend: start() + wait_ready(), then stop() + release()
- docker run        the same containers started by hand, one `docker run` each (scheduler on
                    a port chosen up front, workers pointed at it), ready when the scheduler's
                    /json/identity.json lists them all; stopped with one `docker stop` of all
                    of them (SIGTERM through --init, as daskstep does) and `docker rm`

Both use host networking on loopback and the same limits. "dashboard" is not timed: an image
without bokeh serves no /status page.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

THREADS = 1
MEMORY = "2Gi"
READY_TIMEOUT = 120.0
POLL = 0.05
GOAL_READY = 0.8
GOAL_STOP = 1.0

Timings = tuple[float, float | None, float | None, float]  # ready, dashboard, compute, stop


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workers(http: str) -> int:
    try:
        with urllib.request.urlopen(f"{http}/json/identity.json", timeout=5) as r:
            return len(json.loads(r.read()).get("workers", {}))
    except (OSError, ValueError):
        return -1


def daskstep_docker(image: str) -> Callable[[int, Path], Timings]:
    def run(workers: int, tmp: Path) -> Timings:
        from daskstep.backends.base import ClusterSpec
        from daskstep.backends.docker import DockerBackend

        backend = DockerBackend()
        spec = ClusterSpec(workers=workers, threads=THREADS, memory=MEMORY, image=image)
        try:
            t0 = time.perf_counter()
            backend.start(spec, tmp)
            backend.wait_ready(workers, timeout=READY_TIMEOUT)
            ready = time.perf_counter() - t0
        finally:
            t1 = time.perf_counter()
            backend.stop()
            backend.release()
            stop = time.perf_counter() - t1
        return ready, None, None, stop

    return run


def docker_run(image: str) -> Callable[[int, Path], Timings]:
    def run(workers: int, tmp: Path) -> Timings:
        port, http_port = _free_port(), _free_port()
        common = ["docker", "run", "-d", "--network", "host", "--init", "--pull", "never"]
        common += ["-v", f"{tmp}:{tmp}"]
        scheduler = [*common, image, "dask", "scheduler", "--host", "127.0.0.1"]
        scheduler += ["--port", str(port), "--dashboard-address", f"127.0.0.1:{http_port}"]
        memory = MEMORY.replace("Gi", "g")
        worker = [*common, "--memory", memory, "--memory-swap", memory, "--cpus", str(THREADS)]
        worker += [image, "dask", "worker", f"tcp://127.0.0.1:{port}", "--host", "127.0.0.1"]
        worker += ["--nthreads", str(THREADS), "--memory-limit", memory + "B"]
        ids: list[str] = []
        try:
            t0 = time.perf_counter()
            for argv in [scheduler, *[[*worker, "--name", f"w{i}"] for i in range(workers)]]:
                done = subprocess.run(argv, capture_output=True, text=True, check=True)
                ids.append(done.stdout.strip())
            deadline = time.monotonic() + READY_TIMEOUT
            while _workers(f"http://127.0.0.1:{http_port}") < workers:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"fewer than {workers} workers in {READY_TIMEOUT:g} s")
                time.sleep(POLL)
            ready = time.perf_counter() - t0
        finally:
            t1 = time.perf_counter()
            if ids:
                subprocess.run(["docker", "stop", *ids], capture_output=True)
                subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
            stop = time.perf_counter() - t1
        return ready, None, None, stop

    return run


def available() -> str | None:
    """None if an engine answers (DOCKER_HOST), else why not."""
    done = subprocess.run(["docker", "version"], capture_output=True, text=True)
    if done.returncode != 0:
        where = os.environ.get("DOCKER_HOST", "the default socket")
        return f"no Docker engine answers at {where}"
    return None


def main(args: Any, bench: Any) -> int:
    """`cluster_start.py --backend docker`; `bench` is cluster_start, which calls us, for its
    shared rounds, variants and report."""
    if not args.image:
        print("--backend docker needs --image IMAGE (daskstep images build makes one)")
        return 2
    if why := (bench.daskstep_available() or available()):
        print(f"cannot bench the docker backend: {why}")
        return 1
    variants = [
        bench.Variant("daskstep", "daskstep", daskstep_docker(args.image)),
        bench.Variant("dockerrun", "docker run", docker_run(args.image)),
    ]
    bench.run_rounds(variants, args, dashboard=False)
    failures = bench.report(
        variants, args.workers, args.rounds, "dockerrun", (GOAL_READY, GOAL_STOP)
    )
    for line in failures:
        print(f"  FAILURE {line}")
    return 0
