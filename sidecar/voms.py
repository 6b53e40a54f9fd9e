"""VOMS proxy sidecar: keeps a grid proxy valid all run long, so Dask workers can read grid data.

REANA makes the proxy once (12 h) and its error paths exit 0; here the proxy is renewed before it
expires, written atomically (0600), and every failure is one clear line with a non-zero exit.
The passphrase only ever goes to the `voms-proxy-init` child's stdin: never argv, env or logs.

A second mode, `--watch PROXY`, only watches a proxy the user supplied and warns before it expires.

Exit codes: 0 when stopped; 2 for bad input (wrong passphrase, cert and key that do not match, an
expired cert, an unknown VO, a missing or expired proxy to watch); 69 when the VOMS server cannot
be reached; 1 for other failures.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import tenacity

from sidecar.lifecycle import (
    StopSignal,
    add_remove_on_exit,
    exit_after_stop,
    follow_run,
    remove_files,
)
from sidecar.vomstools import (
    EXIT_BAD_INPUT,
    Proxy,
    ProxyError,
    classify,
    default_binary,
    has_ac,
    read_timeleft,
    run_tool,
    short_message,
)

PREFIX = "voms-sidecar:"


def log(message: str) -> None:
    """One line on stderr, where the sidecar's own status goes (stdout stays free)."""
    print(f"{PREFIX} {message}", file=sys.stderr, flush=True)


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '5m', '2h', '1d' or 'HH:MM[:SS]' : users write all of these."""
    text = text.strip()
    if ":" in text:
        parts = [int(p) for p in text.split(":")]
        if len(parts) not in (2, 3) or any(p < 0 for p in parts):
            raise argparse.ArgumentTypeError(f"bad duration {text!r}: use HH:MM or HH:MM:SS")
        h, m, s = (parts + [0])[:3]
        return float(h * 3600 + m * 60 + s)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd]?)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 30s, 5m, 2h or HH:MM")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def parse_valid(text: str) -> str:
    """The HH:MM form voms-proxy-init's -valid wants."""
    if not re.fullmatch(r"\d+:\d\d", text.strip()):
        raise argparse.ArgumentTypeError(f"bad --valid {text!r}: use HH:MM, e.g. 12:00")
    return text.strip()


# --- the proxy maker --------------------------------------------------------------------------


class Maker:
    """Makes, checks and atomically installs one proxy per call."""

    def __init__(self, args: argparse.Namespace, passphrase: str | None) -> None:
        self.args = args
        self.passphrase = passphrase
        self.out = Path(args.out)
        self.vo = args.voms.split(":", 1)[0] if args.voms else None
        self.secrets = [passphrase] if passphrase else []

    def make(self) -> Proxy:
        """A fresh proxy onto --out, or ProxyError with one clear line."""
        a = self.args
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.out.name}.", dir=self.out.parent)
        os.close(fd)  # mkstemp made it 0600; voms-proxy-init overwrites it in place
        tmp = Path(tmp_name)
        try:
            argv = [a.init_binary, "-rfc", "-valid", a.valid, "-cert", a.cert, "-key", a.key]
            argv += ["-out", str(tmp)]
            if a.voms:
                argv += ["-voms", a.voms]
            if a.vomses:
                argv += ["-vomses", a.vomses]
            stdin = None
            if self.passphrase is not None:
                argv.append("-pwstdin")
                stdin = (self.passphrase + "\n").encode()
            out = run_tool(argv, stdin=stdin)
            if out.returncode != 0:
                raise classify(out.returncode, out.stderr + out.stdout, a, self.secrets)
            check = [a.info_binary, "--file", str(tmp), "--exists"]
            if self.vo:
                check += ["--acexists", self.vo]
            res = run_tool(check)
            if res.returncode != 0:
                what = f"with a {self.vo!r} attribute " if self.vo else ""
                msg = short_message(res.stderr + res.stdout, self.secrets)
                raise ProxyError(f"the new proxy {what}failed voms-proxy-info's check: {msg}")
            left = read_timeleft(a.info_binary, tmp, self.vo is not None)
            if not left:
                raise ProxyError("the new proxy has no time left: check the clocks and --valid")
            tmp.chmod(0o600)
            os.replace(tmp, self.out)
            return Proxy(left)
        finally:
            tmp.unlink(missing_ok=True)


# --- main loops --------------------------------------------------------------------------------


def renew_before_for(args: argparse.Namespace) -> float:
    """Explicit --renew-before, else a quarter of the validity and at least 30 s."""
    if args.renew_before is not None:
        return args.renew_before
    return max(30.0, parse_duration(args.valid) / 4)


def renew(maker: Maker, stopper: StopSignal, expires: float) -> Proxy:
    """Renew with backoff; the old proxy stays in place (and usable) until `expires`."""

    def warn(rs: tenacity.RetryCallState) -> None:
        left = max(0.0, expires - time.monotonic())
        exc = rs.outcome.exception() if rs.outcome else None
        log(f"warning: renewal failed, keeping the old proxy ({left:.0f} s left): {exc}")

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(ProxyError),
        wait=tenacity.wait_exponential(multiplier=1, min=1, max=60),
        stop=lambda _s: stopper.is_set() or time.monotonic() >= expires,
        sleep=stopper.wait,
        before_sleep=warn,
        reraise=True,
    )
    return retrying(maker.make)


def run_maker(args: argparse.Namespace) -> int:
    """Make the first proxy (fail hard), then keep it renewed until told to stop."""
    passphrase = None
    if args.passphrase_file:
        try:
            passphrase = Path(args.passphrase_file).read_text().rstrip("\r\n")
        except OSError as e:
            log(f"error: cannot read --passphrase-file {args.passphrase_file}: {e.strerror}")
            return EXIT_BAD_INPUT
    elif args.passphrase_base64_file and os.path.exists(args.passphrase_base64_file):
        try:
            raw = Path(args.passphrase_base64_file).read_bytes().strip()
            passphrase = base64.b64decode(raw, validate=True).decode().rstrip("\r\n")
        except (OSError, ValueError) as e:  # never the content: it is the secret
            why = getattr(e, "strerror", None) or "not base64 (store it as REANA does)"
            log(f"error: cannot read --passphrase-base64-file {args.passphrase_base64_file}: {why}")
            return EXIT_BAD_INPUT
    for flag, path in (("--cert", args.cert), ("--key", args.key)):
        if not os.access(path, os.R_OK):
            log(f"error: cannot read {flag} {path}: missing or not readable")
            return EXIT_BAD_INPUT
    if args.private_key_copy:
        # grid tools refuse a key others may read, as a Secret volume's files can be
        shutil.copyfile(args.key, args.private_key_copy)
        os.chmod(args.private_key_copy, 0o600)
        args.remove_on_exit.append(args.private_key_copy)
        args.key = args.private_key_copy
    maker = Maker(args, passphrase)
    stopper = StopSignal(args.stop_file).install()
    renew_before = renew_before_for(args)
    try:
        proxy = maker.make()
    except ProxyError as e:
        log(f"error: {e}")
        return e.exit_code
    expires = proxy.expires_at
    log(f"proxy ready: {args.out} ({proxy.timeleft:.0f} s left, renew {renew_before:.0f} s early)")
    touch(args.ready_file)
    while not stopper.is_set():
        stopper.wait(max(1.0, expires - renew_before - time.monotonic()))
        if stopper.is_set():
            break
        try:
            proxy = renew(maker, stopper, expires)
        except ProxyError as e:
            if stopper.is_set():
                break
            log(f"error: the proxy expired and could not be renewed: {e}")
            return 1
        expires = proxy.expires_at
        log(f"proxy renewed: {args.out} ({proxy.timeleft:.0f} s left)")
    log("stopping")
    return 0


def run_watch(args: argparse.Namespace) -> int:
    """Watch a user-supplied proxy: fail at start if unusable, later only warn."""
    path = Path(args.watch)
    stopper = StopSignal(args.stop_file).install()
    warned_expired = False
    first = True
    while not stopper.is_set():
        try:
            left = read_timeleft(args.info_binary, path, with_ac=has_ac(args.info_binary, path))
        except ProxyError as e:
            left, reason = None, str(e)
        else:
            reason = "missing or not a proxy" if not path.exists() else "not a readable proxy"
        if first and not left:
            log(f"error: proxy {path} is " + ("expired" if left == 0 else reason))
            return EXIT_BAD_INPUT
        if first:
            touch(args.ready_file)
        first = False
        if not left:
            if not warned_expired:
                log(f"warning: proxy {path} expired or unreadable; tasks needing it fail")
                warned_expired = True
        else:
            warned_expired = False
            if left <= args.warn_before:
                log(f"warning: proxy {path} expires in {left:.0f} s; renew it")
            else:
                log(f"proxy {path} valid for {left:.0f} s more")
        stopper.wait(args.interval)
    log("stopping")
    return 0


def touch(ready_file: str | None) -> None:
    """Readiness for `daskstep run`: a usable proxy is in place."""
    if ready_file:
        Path(ready_file).parent.mkdir(parents=True, exist_ok=True)
        Path(ready_file).touch()


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="daskstep sidecar voms", description=__doc__.split("\n")[0])
    p.add_argument("--cert", help="user certificate (PEM)")
    p.add_argument("--key", help="user private key (PEM)")
    p.add_argument("--passphrase-file", help="file holding the key's passphrase (given on stdin)")
    p.add_argument(
        "--passphrase-base64-file",
        metavar="FILE",
        help="REANA's VOMSPROXY_PASS as a file (base64 of the passphrase); absent: no passphrase",
    )
    p.add_argument(
        "--private-key-copy",
        metavar="PATH",
        help="use a 0600 copy of --key made here (a Secret volume's files may be shared)",
    )
    p.add_argument("--voms", help="VO[:FQAN] to ask the VOMS server for")
    p.add_argument("--out", help="proxy file to keep valid")
    p.add_argument("--valid", type=parse_valid, default="12:00", help="proxy validity HH:MM")
    p.add_argument(
        "--renew-before",
        type=parse_duration,
        default=None,
        help="renew when less than this remains (default: 25%% of --valid, >= 30 s)",
    )
    p.add_argument("--init-binary", default=default_binary(["voms-proxy-init2", "voms-proxy-init"]))
    p.add_argument("--info-binary", default=default_binary(["voms-proxy-info2", "voms-proxy-info"]))
    p.add_argument("--vomses", help="vomses file or folder (default: the tool's own search)")
    p.add_argument("--stop-file", help="stop (exit 0) once this file exists")
    p.add_argument("--ready-file", help="touched once a usable proxy is in place")
    add_remove_on_exit(p, "proxy")
    p.add_argument("--watch", metavar="PROXY", help="only watch this proxy and warn before expiry")
    p.add_argument(
        "--warn-before",
        type=parse_duration,
        default=3600.0,
        help="watch mode: warn when less than this remains (default 1h)",
    )
    p.add_argument(
        "--interval",
        type=parse_duration,
        default=60.0,
        help="watch mode: seconds between checks (default 60)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    os.umask(0o077)
    follow_run()
    try:
        if args.watch:
            return run_watch(args)
        missing = [f"--{n}" for n in ("cert", "key", "out") if not getattr(args, n)]
        if missing:
            parser.error(f"missing {', '.join(missing)} (or use --watch PROXY)")
        return run_maker(args)
    except ProxyError as e:
        log(f"error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        return 0
    finally:
        remove_files(args.remove_on_exit)


if __name__ == "__main__":
    exit_after_stop(main())
