"""What MIT's kinit and klist say, in our words: the TGT's times from `klist`, and one clear line
(with the exit code for its kind) for each way `kinit` fails. Never sees key material."""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import dataclass
from datetime import datetime

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_UNAVAILABLE = 69
_KLIST_TIME_FORMATS = (
    "%m/%d/%y %H:%M:%S",  # MIT klist in the C locale
    "%m/%d/%Y %H:%M:%S",
    "%d %b %Y %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%d/%m/%Y %H:%M",
)


class KerberosError(Exception):
    """A failure with one clear line for the user; `exit_code` says which kind."""

    exit_code = EXIT_FAILED


class BadInput(KerberosError):
    exit_code = EXIT_BAD_INPUT


class KdcUnreachable(KerberosError):
    exit_code = EXIT_UNAVAILABLE


class RenewFailed(KerberosError):
    """Renewal did not work; the caller falls back to a fresh kinit from the keytab."""


@dataclass(frozen=True)
class Ticket:
    """The TGT's times as klist shows them (epoch seconds, local clock)."""

    principal: str
    start: float
    end: float
    renew_till: float | None


def _parse_klist_time(text: str) -> float:
    for fmt in _KLIST_TIME_FORMATS:
        with contextlib.suppress(ValueError):
            return time.mktime(datetime.strptime(text, fmt).timetuple())
    raise ValueError(f"unknown klist time format: {text!r}")


def parse_klist(output: str, realm: str | None = None) -> Ticket:
    """The TGT (krbtgt/REALM@REALM) from `klist` output run in the C locale."""
    principal = ""
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("Default principal:"):
            principal = line.split(":", 1)[1].strip()
        tokens = line.split()
        if not tokens or not tokens[-1].startswith("krbtgt/"):
            continue
        service = tokens[-1]
        if realm and service != f"krbtgt/{realm}@{realm}":
            continue
        times = tokens[:-1]
        half = len(times) // 2
        if half == 0 or len(times) % 2:
            continue
        start = _parse_klist_time(" ".join(times[:half]))
        end = _parse_klist_time(" ".join(times[half:]))
        renew_till = None
        if i + 1 < len(lines) and lines[i + 1].strip().startswith("renew until"):
            renew_till = _parse_klist_time(lines[i + 1].strip()[len("renew until") :].strip())
        return Ticket(principal, start, end, renew_till)
    raise ValueError("no ticket-granting ticket in the cache")


def when(epoch: float | None) -> str:
    if epoch is None:
        return "never"
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")


def first_line(stderr: str) -> str:
    """kinit's own message (never key material), without the program prefix."""
    for line in stderr.splitlines():
        line = line.strip()
        if line:
            return re.sub(r"^(kinit|klist): ", "", line)
    return "no message"


def classify_kinit_error(stderr: str, keytab: str, principal: str) -> KerberosError:
    """One clear line for each way kinit fails."""
    line = first_line(stderr)
    realm = principal.rpartition("@")[2] or "(default realm)"
    low = line.lower()
    if "key table file" in low and "not found" in low:
        return BadInput(f"keytab {keytab} is missing: {line}")
    if "no suitable keys" in low or "not found in kerberos database" in low:
        return BadInput(f"principal {principal} is not in keytab {keytab} or unknown: {line}")
    if "key table" in low or "keytab" in low:
        return BadInput(f"keytab {keytab} cannot be read: {line}")
    if "preauthentication failed" in low or "password incorrect" in low:
        return BadInput(f"keytab {keytab} does not hold the current key of {principal}: {line}")
    if "cannot contact any kdc" in low or "cannot resolve network address" in low:
        return KdcUnreachable(f"cannot reach the KDC for realm {realm}: {line}")
    if "clock skew" in low:
        return KerberosError(f"clock skew with the KDC for realm {realm} too great: {line}")
    return KerberosError(f"kinit failed for {principal}: {line}")
