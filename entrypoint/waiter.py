"""Waits until the step can start: files from sidecars are there, and the scheduler really answers.

Readiness is a Dask handshake, not an open port (a Service or a proxy accepts connections with
nobody behind them). Workers are counted by asking the scheduler: through `distributed` when
this image has it, otherwise through the scheduler's HTTP JSON route. Retries are exponential
with full jitter under one deadline; one log line per state change, not one per attempt.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from entrypoint.core import (
    EntrypointError,
    Readiness,
    SchedulerUnavailable,
    TooFewWorkers,
    UsageError,
)

TYPE_CHECKING = False  # not `typing`: importing it costs more than this module

if TYPE_CHECKING:
    from collections.abc import Callable

MAX_DELAY = 0.1  # the backoff cap, and so the worst latency from "ready" to "started"
HANDSHAKE_MARK = b"pickle-protocol"  # in the first message every Dask comm sends


class NotReady(Exception):
    def __init__(self, state: str, detail: str) -> None:
        super().__init__(detail)
        self.state = state


class WaitFileMissing(EntrypointError):
    exit_code = 69


TLS_PREFIX = "DASK_DISTRIBUTED__COMM__TLS__"
TLS_FILES = {"CA_FILE": "ca.pem", "CLIENT__CERT": "client.pem", "CLIENT__KEY": "client-key.pem"}


def export_tls(folder: str) -> None:
    """The run's client certificate from `folder`, as the variables `Client(uri)` and our own
    probes read (dask reads them at import, so before anything imports it)."""
    for variable, name in TLS_FILES.items():
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise UsageError(f"--tls-dir {folder}: {name} is missing; give the run's TLS folder")
        os.environ[TLS_PREFIX + variable] = path
    os.environ["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"


def normalise_uri(uri: str) -> str:
    """REANA passes `host:port`; Dask wants a scheme (tls:// once the run's TLS is exported)."""
    uri = uri.strip()
    if "://" not in uri:
        tls = os.environ.get("DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "").lower() == "true"
        uri = ("tls://" if tls else "tcp://") + uri
    host_port(uri)  # validates
    return uri


def host_port(uri: str) -> tuple[str, int]:
    rest = uri.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UsageError(f"scheduler address '{uri}' needs a host and a port, e.g. tcp://host:8786")
    return host.strip("[]"), int(port)


def _tls_context():  # -> ssl.SSLContext; ssl is imported only when a tls:// scheduler is used
    """The client side of Dask's TLS, from the same variables `Client(uri)` reads."""
    import ssl

    env = os.environ
    prefix = TLS_PREFIX
    context = ssl.create_default_context(cafile=env.get(prefix + "CA_FILE"))
    context.check_hostname = False  # Dask checks certificates, not host names
    cert = env.get(prefix + "CLIENT__CERT")
    if cert:
        context.load_cert_chain(cert, env.get(prefix + "CLIENT__KEY"))
    return context


def _ascii(host: str) -> str | bytes:
    """An ASCII host as bytes: given a str, the resolver encodes it with the idna codec, whose
    import (unicodedata, stringprep) costs a step's start more than the connection itself."""
    try:
        return host.encode("ascii")
    except UnicodeEncodeError:
        return host


def dask_handshake(uri: str, timeout: float) -> bytes:
    """Connect and read the scheduler's first message; raises OSError if it is not Dask."""
    host, port = host_port(uri)
    scheme = uri.split("://", 1)[0]
    with socket.create_connection((_ascii(host), port), timeout=timeout) as raw:
        sock = _tls_context().wrap_socket(raw) if scheme == "tls" else raw
        if scheme not in ("tcp", "tls"):
            return b""  # ws://, ucx://: an open port is all we can check without distributed
        data = b""
        while HANDSHAKE_MARK not in data and len(data) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed before a Dask handshake")
            data += chunk
        return data


def connection_args(uri: str) -> dict:
    """distributed's client side of the run's TLS, from the variables; {} for tcp://. Built
    here, not from dask's config, which may have been read before the variables were set."""
    if not uri.startswith("tls://"):
        return {}
    from distributed.security import Security

    env = os.environ
    security = Security(
        tls_ca_file=env.get(TLS_PREFIX + "CA_FILE"),
        tls_client_cert=env.get(TLS_PREFIX + "CLIENT__CERT"),
        tls_client_key=env.get(TLS_PREFIX + "CLIENT__KEY"),
        require_encryption=True,
    )
    return security.get_connection_args("client")


def _workers_via_distributed(uri: str, timeout: float) -> int | None:
    try:  # distributed first: without it, asyncio would be a slow import for nothing
        from distributed.core import rpc
    except Exception:
        return None
    import asyncio

    async def ask() -> int:
        scheduler = rpc(uri, timeout=timeout, connection_args=connection_args(uri))
        try:
            return len((await scheduler.identity())["workers"])
        finally:
            await scheduler.close_rpc()

    return asyncio.run(ask())


def _workers_via_http(dashboard: str, timeout: float) -> int:
    import json
    import urllib.request

    url = dashboard.rstrip("/") + "/json/identity.json"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return len(json.load(response)["workers"])


class SchedulerWaiter:
    def __init__(
        self,
        uri: str | None,
        timeout: float = 300.0,
        workers: int = 0,
        files: list[str] | None = None,
        dashboard: str | None = None,
        log: Callable[[str], None] = lambda m: print(m, file=sys.stderr, flush=True),
    ) -> None:
        self.uri = normalise_uri(uri) if uri else None
        self.timeout = timeout
        self.workers = workers
        self.files = files or []
        self.dashboard = dashboard
        if self.uri and not dashboard:
            self.dashboard = f"http://{host_port(self.uri)[0]}:8787"
        self.log = log
        self.state = ""
        self.seen_workers: int | None = None

    def _probe(self, remaining: float) -> None:
        for path in self.files:
            try:
                if os.path.getsize(path) > 0:
                    continue
            except OSError:
                pass
            raise NotReady("files", f"waiting for {path}")
        if not self.uri:
            return
        each = max(min(remaining, 2.0), 0.05)
        try:
            dask_handshake(self.uri, each)
        except OSError as e:
            raise NotReady("scheduler", f"waiting for scheduler {self.uri} ({e})") from None
        if self.workers <= 0:
            return
        try:
            n = _workers_via_distributed(self.uri, each)
            if n is None:
                n = _workers_via_http(str(self.dashboard), each)
        except Exception as e:
            raise NotReady("workers", f"cannot count workers yet ({e})") from None
        self.seen_workers = n
        if n < self.workers:
            raise NotReady("workers", f"{n} of {_workers(self.workers)}; waiting")

    def _note(self, state: str, message: str) -> None:
        if state != self.state:
            self.state = state
            self.log(f"daskstep-entrypoint: {message}")

    def wait(self) -> Readiness:
        if not self.uri and not self.files:
            return Readiness()
        start = time.monotonic()
        try:
            self._probe(self.timeout)  # the common case: ready at once, so no retry machinery
        except NotReady as e:
            self._note(e.state, str(e))
            self._retry(start + self.timeout)
            self.log(f"daskstep-entrypoint: ready after {time.monotonic() - start:.2f} s")
        return Readiness(self.uri, self.seen_workers)

    def _retry(self, deadline: float) -> None:
        try:  # vendored into the zipapp; a dependency of daskstep itself
            import tenacity
        except ImportError:  # pragma: no cover
            raise EntrypointError("tenacity is missing; use the packed entrypoint") from None
        retrying = tenacity.Retrying(
            stop=tenacity.stop_before_delay(max(deadline - time.monotonic(), 0)),
            wait=tenacity.wait_random_exponential(multiplier=0.005, max=MAX_DELAY),
            retry=tenacity.retry_if_exception_type(NotReady),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    try:
                        self._probe(deadline - time.monotonic())
                    except NotReady as e:
                        self._note(e.state, str(e))
                        raise
        except NotReady as e:
            raise self._gave_up(e) from None

    def _gave_up(self, e: NotReady) -> EntrypointError:
        within = f"within {self.timeout:g} s"
        if e.state == "files":
            return WaitFileMissing(f"{e} {within}: the file is missing or empty")
        if e.state == "workers" and self.seen_workers is not None:
            return TooFewWorkers(f"only {self.seen_workers} of {_workers(self.workers)} {within}")
        if e.state == "workers":
            return TooFewWorkers(f"could not count the workers {within}: {e}")
        return SchedulerUnavailable(f"scheduler {self.uri} unreachable {within}")


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"
