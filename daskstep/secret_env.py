"""Secrets that arrive as environment variables (REANA exports `VOMSPROXY_PASS` so), kept out of
every other process's view.

Deleting a variable from `os.environ` does not erase it from the process's initial environment
block: `/proc/PID/environ` still shows it, and so does every child that we fork, from the fork
until its exec. So `daskstep run` executes itself again, before it starts anything, without the
secret variables in its environment, and hands their values over through a pipe: never argv,
never an environment. The process id stays the same, so whoever started it notices nothing.

The same exec gives `daskstep run` the workers' hash seed (PYTHONHASHSEED, which only counts at
an interpreter's start), so that the local backend can fork its launcher from the controller
(backends/warm_launch.py); the variable is then taken out of our environment again, so that
the steps and sidecars start with the environment the user gave.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterable, Mapping

# Secret values REANA exports as environment variables; children never inherit them.
SECRET_VARIABLES = ("VOMSPROXY_PASS",)
HANDOFF_ENV = "DASKSTEP_SECRETS_HANDOFF_FD"
PIPE_CAPACITY = 65536  # Linux's default; written in one go before the exec, so it must fit
WORKERS_HASH_SEED = "6640"  # dask's Nanny's own choice, so hashes match a LocalCluster's
SEED_ADDED_ENV = "DASKSTEP_HASHSEED_ADDED"
_holds_secrets = False


def reexec_for_run(names: Iterable[str]) -> None:
    """If any of `names` is in our environment, or PYTHONHASHSEED is not, exec ourselves again
    without the former and with the latter; else return.

    The values wait in a pipe for `handed_over()` in the new image.
    """
    if HANDOFF_ENV in os.environ or SEED_ADDED_ENV in os.environ:
        return  # this is the new image
    found = {name: os.environ[name] for name in names if name in os.environ}
    add_seed = not os.environ.get("PYTHONHASHSEED")  # unset or empty: random
    if not found and not add_seed:
        return
    env = {k: v for k, v in os.environ.items() if k not in found}
    if add_seed:
        env["PYTHONHASHSEED"] = WORKERS_HASH_SEED
        env[SEED_ADDED_ENV] = "1"
    if found:
        data = json.dumps(found).encode()
        if len(data) >= PIPE_CAPACITY:
            return  # far beyond any passphrase; fall back to dropping them from os.environ
        read_end, write_end = os.pipe()
        os.write(write_end, data)
        os.close(write_end)
        os.set_inheritable(read_end, True)
        env[HANDOFF_ENV] = str(read_end)
    sys.stdout.flush()
    sys.stderr.flush()
    # argv[0] as the path we run from: a bare "python3" would be looked up on PATH again
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def settle() -> None:
    """In the new image: the seed we added is ours alone, not our children's."""
    if os.environ.pop(SEED_ADDED_ENV, None) is not None:
        os.environ.pop("PYTHONHASHSEED", None)


def holds_secrets() -> bool:
    """Whether this process was handed secret values (or read them from its environment)."""
    return _holds_secrets


def handed_over() -> dict[str, str]:
    """The values `reexec_for_run` passed on (empty when there was no re-exec)."""
    global _holds_secrets
    fd_text = os.environ.pop(HANDOFF_ENV, None)
    if fd_text is None:
        return {}
    _holds_secrets = True
    try:
        fd = int(fd_text)
        with os.fdopen(fd, "rb") as pipe:
            values = json.loads(pipe.read() or b"{}")
    except (ValueError, OSError):
        return {}
    with contextlib.suppress(AttributeError):
        return {str(k): str(v) for k, v in values.items()}
    return {}


def strip_secrets(env: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k not in SECRET_VARIABLES}


def forget_secret_variables() -> None:
    """Once read: no child of ours (cluster, sidecars, steps) may inherit them."""
    global _holds_secrets
    for name in SECRET_VARIABLES:
        if os.environ.pop(name, None) is not None:
            _holds_secrets = True


def child_env() -> dict[str, str]:
    """The environment of daskstep's children: without secrets, and with our pid, so that one
    that must not outlive us still notices that its parent changed if we die before it can ask
    the kernel to tell it (PR_SET_PDEATHSIG)."""
    env = strip_secrets(os.environ)
    env["DASKSTEP_PARENT_PID"] = str(os.getpid())
    return env
