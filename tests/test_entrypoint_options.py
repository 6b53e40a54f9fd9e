"""The entrypoint reads its options with a quick parser and leaves the rest to argparse (whose
import costs more than the rest of the wrapper): the two must never disagree."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from entrypoint.__main__ import OPTIONS, PROG, _Parser, _quick, parse

FLAGS = [flag for flag, _kind, _default, _extra in OPTIONS]
VALUES = st.sampled_from(
    ["x", "tcp://127.0.0.1:8786", "3", "-1", "2.5", "nan", "warn", "fail", "bogus", "", "--", "-h"]
)
ARGS = st.one_of(
    st.sampled_from(FLAGS),
    st.builds(lambda f, v: f"{f}={v}", st.sampled_from(FLAGS), VALUES),
    VALUES,
    st.sampled_from(["--sched", "--help", "-h", "--unknown", "echo", "sh"]),
)


def argparse_says(argv: list[str]) -> str | None:
    try:
        return said(_Parser.make(PROG, None).parse_args(argv))
    except (Exception, SystemExit):
        return None


def said(options: object) -> str:
    """Comparable, nan included."""
    return repr(sorted(vars(options).items()))


@settings(max_examples=400, deadline=None)
@given(st.lists(ARGS, max_size=8))
def test_the_quick_parser_agrees_with_argparse_or_steps_aside(argv: list[str]) -> None:
    quick = _quick(argv)
    if quick is not None:
        assert said(quick) == argparse_says(argv), argv


@pytest.mark.parametrize(
    "argv",
    [
        ["--status-file", "/s/status.json", "--termination-log", "/s/term", "--grace-period",
         "10", "--versions", "warn", "--scheduler", "tls://127.0.0.1:1", "--wait-file", "/a",
         "--shell", "python step.py"],
        ["--scheduler=tcp://h:1", "--die-with-parent", "--", "sh", "-c", "echo --scheduler"],
        ["--tls-dir", "/t", "--health-port", "8080", "--wait-workers", "2", "true"],
    ],
)  # fmt: skip
def test_what_daskstep_passes_takes_the_quick_path(argv: list[str]) -> None:
    quick = _quick(argv)
    assert quick is not None and said(quick) == argparse_says(argv)


def test_the_environment_gives_the_defaults_on_both_paths(monkeypatch) -> None:
    monkeypatch.setenv("DASK_SCHEDULER_URI", "tcp://10.0.0.1:8786")
    monkeypatch.setenv("DASKSTEP_WAIT_FILES", "/a:/b")
    monkeypatch.setenv("DASKSTEP_DIE_WITH_PARENT", "1")
    args = parse(["--wait-file", "/c", "--", "true"])
    assert args.scheduler == "tcp://10.0.0.1:8786" and args.wait_file == ["/a", "/b", "/c"]
    assert args.die_with_parent and args.command == ["true"]
    assert said(_quick(["--wait-file", "/c", "--", "true"])) == argparse_says(
        ["--wait-file", "/c", "--", "true"]
    )
