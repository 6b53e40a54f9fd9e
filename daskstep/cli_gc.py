"""`daskstep gc`: what runs whose `daskstep run` is gone left behind, removed."""

from __future__ import annotations

import argparse

from daskstep.words import plural


def cmd_gc(args: argparse.Namespace) -> int:
    if args.backend != "docker":
        return _gc_batch(args.backend, args.all)
    from daskstep.docker.containers import abandoned_runs, remove_run
    from daskstep.docker.images import docker_client

    client = docker_client()
    runs = abandoned_runs(client, everything=args.all)
    for run_id in sorted(runs):
        print(f"{run_id}: removed {plural(remove_run(client, run_id), 'container')}")
    if not runs:
        print("nothing to remove")
    return 0


def _gc_batch(backend: str, everything: bool) -> int:
    from daskstep.batch import system_for
    from daskstep.batch.site import Site

    system = system_for(backend, Site())
    runs = system.abandoned_runs(everything)
    for run_id in sorted(runs):
        jobs = system.queued(run_id)
        system.cancel_run(run_id)
        print(f"{run_id}: cancelled {plural(len(jobs), backend + ' job')}")
    if not runs:
        print("nothing to cancel")
    return 0
