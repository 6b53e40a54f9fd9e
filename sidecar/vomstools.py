"""What the VOMS C tools say, in our words: running them, reading a proxy's time left, and one
clear line (with the exit code for its kind) for each way `voms-proxy-init` fails. Secrets that
might echo back are masked before any line leaves here."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TOOL_TIMEOUT = 120.0  # seconds for one voms-proxy-init / -info call (a VOMS server can hang)
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2  # wrong passphrase, unreadable or mismatched cert/key, expired cert, unknown VO
EXIT_UNAVAILABLE = 69  # the VOMS server could not be reached


class ProxyError(Exception):
    """A proxy could not be made or checked; str() is the one line shown to the user."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def default_binary(names: list[str]) -> str:
    """The C tools: the '2' names stay C even when voms-clients-java took the plain names."""
    for name in names:
        if shutil.which(name):
            return name
    return names[-1]


# --- classification of voms-proxy-init failures -------------------------------------------------

_NOISE = re.compile(
    r"^(\s*$|[.+*\s]+$|Function:|Cannot open file.*\.rnd|Your identity:|Creating (temporary )?proxy"
    r"|Your proxy is valid|Contacting\s|No policy language|Remote VOMS server contacted succ)"
)


def short_message(stderr: str, secrets: list[str]) -> str:
    """The tool's own words, noise removed, at most ~200 chars, with any secret masked."""
    lines = [ln.strip() for ln in stderr.splitlines() if not _NOISE.match(ln.strip())]
    text = "; ".join(dict.fromkeys(ln for ln in lines if ln))
    text = redact(text, secrets)
    return (text[:200] + "…") if len(text) > 200 else (text or "no message")


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def classify(rc: int, output: str, args: argparse.Namespace, secrets: list[str]) -> ProxyError:
    """One clear line for a failed voms-proxy-init, with the exit code for its kind."""
    message = describe(rc, output, args, secrets)
    if "unreachable" in message:
        return ProxyError(message, EXIT_UNAVAILABLE)
    bad_input = ("passphrase", "do not match", "has expired", "not valid yet", "unknown VO")
    if any(w in message for w in bad_input) or message.startswith("cannot read"):
        return ProxyError(message, EXIT_BAD_INPUT)
    return ProxyError(message)


def describe(rc: int, output: str, args: argparse.Namespace, secrets: list[str]) -> str:
    """One clear line for a failed voms-proxy-init, from its exit code and messages."""
    low = output.lower()
    vo = (args.voms or "").split(":", 1)[0]
    if "bad decrypt" in low or "bad password read" in low or "wrong passphrase" in low:
        if args.passphrase_file:
            return f"wrong passphrase for key {args.key} (from --passphrase-file)"
        return f"key {args.key} is encrypted: give its passphrase with --passphrase-file"
    if "key and certificate don't match" in low or "key values mismatch" in low:
        return f"certificate {args.cert} and key {args.key} do not match"
    if "certificate expired" in low:
        m = re.search(r"certificate expired (.+)", output, re.IGNORECASE)
        when = f" (on {m.group(1).strip()})" if m else ""
        return f"certificate {args.cert} has expired{when}: renew your grid certificate"
    if "not yet valid" in low:
        return f"certificate {args.cert} is not valid yet"
    if re.search(r"voms server for \S+ not known", low):
        where = args.vomses or "the vomses files"
        return f"unknown VO {vo!r}: no entry for it in {where}"
    if "none of the contacted servers" in low or "failed to contact" in low:
        net = ("handshake", "connect", "refused", "timed out", "timeout", "unreachable", "resolve")
        m = re.search(r"Contacting\s+(\S+)", output)
        where = f" at {m.group(1)}" if m else ""
        if any(w in low for w in net):
            return f"VOMS server for {vo!r}{where} unreachable: check the vomses entry and network"
        return f"VOMS server for {vo!r} refused the request: {short_message(output, secrets)}"
    if "no such file" in low or "unable to load" in low or "cannot find" in low:
        return f"cannot read certificate or key: {short_message(output, secrets)}"
    return f"voms-proxy-init failed (exit {rc}): {short_message(output, secrets)}"


@dataclass
class Proxy:
    """What voms-proxy-info says about a proxy file."""

    timeleft: float  # seconds until the proxy (or its AC, if smaller) expires

    @property
    def expires_at(self) -> float:
        return time.monotonic() + self.timeleft


def run_tool(argv: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    """Run one VOMS tool; the environment is ours, which holds no secret."""
    try:
        out = subprocess.run(
            argv,
            input=stdin,
            stdin=None if stdin is not None else subprocess.DEVNULL,
            capture_output=True,
            timeout=TOOL_TIMEOUT,
            check=False,
        )
    except FileNotFoundError:
        raise ProxyError(f"{argv[0]} not found: install voms-clients (the C tools)") from None
    except subprocess.TimeoutExpired:
        raise ProxyError(f"{argv[0]} did not finish within {TOOL_TIMEOUT:.0f} s") from None
    return subprocess.CompletedProcess(
        argv,
        out.returncode,
        out.stdout.decode(errors="replace"),
        out.stderr.decode(errors="replace"),
    )


def read_timeleft(info: str, path: Path, with_ac: bool) -> float | None:
    """Seconds left on the proxy (and its AC when asked); None when missing or unreadable."""
    out = run_tool([info, "--file", str(path), "--timeleft"])
    try:
        left = float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else None
    except (ValueError, IndexError):
        left = None
    if left is None or not with_ac:
        return left
    ac = run_tool([info, "--file", str(path), "--actimeleft"])
    try:
        return min(left, float(ac.stdout.strip().splitlines()[-1])) if ac.returncode == 0 else 0
    except (ValueError, IndexError):
        return 0.0


def has_ac(info: str, path: Path) -> bool:
    """Whether the proxy carries a VOMS attribute, so its AC lifetime also counts."""
    out = run_tool([info, "--file", str(path), "--acissuer"])
    return out.returncode == 0 and bool(out.stdout.strip())
