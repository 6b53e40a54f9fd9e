"""Property: whatever text or bytes a feature file holds, `daskstep test` ends in exit 0 or 1
with one line per scenario, or in exit 2 with exactly one `error: FILE:LINE: ...` line, never
a traceback; as `validate` and `run` do for a reana.yaml (test_input_properties.py).

The feature files are arbitrary text, and Gherkin put together from the real keywords, the
vocabulary's phrases and arbitrary values, so that valid files (exit 0 and 1) are reached too.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_workflow_tests import make_run, write_reana

from daskstep import cli
from daskstep.workflow_tests.step_definitions import VOCABULARY

RESULT = ("PASSED  ", "FAILED  ", "SKIPPED ", "workflow tests: ")
KEYWORDS = ["Given ", "When ", "Then ", "And ", "But ", "* ", "Scenario: ", "Background:",
            "Scenario Outline: ", "Examples:", "Rule: ", "Feature: ", "@tag ", "# ", '"""',
            "| a | b |", "# language: fr", "Fonctionnalité: "]  # fmt: skip
VALUES = ["finished", '"failed"', "stopped", '"generate"', '"analyse"', '"histogram.png"',
          "data/part-00.jsonl", "2", "1.5", "10KiB", "12 furlongs", "sha256", "adler32",
          '"00"', "minutes", "seconds", '"../x"', "", '"wrote 8 files"']  # fmt: skip


def _phrase(wording: str, values: list[str]) -> str:
    """A phrase of the vocabulary with its {values} filled in."""
    for value in values:
        if "{" in wording:
            wording = wording.replace(wording[wording.find("{") : wording.find("}") + 1], value, 1)
    return wording


phrases = st.builds(
    _phrase,
    st.sampled_from([p.wording for p in VOCABULARY]),
    st.lists(st.sampled_from(VALUES) | st.text(max_size=8), min_size=3, max_size=3),
)
lines = st.builds(
    lambda indent, keyword, rest: " " * indent + keyword + rest,
    st.integers(0, 6),
    st.sampled_from(KEYWORDS),
    phrases | st.text(max_size=20),
)
gherkin = st.builds(
    lambda body: "Feature: checks\n" + "\n".join(body) + "\n",
    st.lists(lines, max_size=12),
)
step_lines = st.builds(
    lambda keyword, phrase: f"    {keyword}{phrase}",
    st.sampled_from(["Given ", "When ", "Then ", "And ", "* "]),
    phrases,
)
scenarios = st.builds(
    lambda name, steps: f"  Scenario: {name}\n" + "\n".join(steps),
    st.text(max_size=10),
    st.lists(step_lines, min_size=1, max_size=4),
)
features = st.lists(scenarios, min_size=1, max_size=3).map(
    lambda body: "Feature: runs\n" + "\n".join(body) + "\n"
)
texts = st.text(max_size=300) | gherkin | features | st.lists(lines, max_size=8).map("\n".join)

EXAMPLES = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_run(tmp_path_factory.mktemp("ws"))


def _check(data: bytes, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        reana = write_reana(Path(folder), {"tests/x.feature": ""})
        (Path(folder) / "tests" / "x.feature").write_bytes(data)
        junit = Path(folder) / "tests.xml"
        try:
            code = cli.main(
                ["test", str(reana), "--workspace", str(workspace), "--junit", str(junit)]
            )
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capsys.readouterr()
    event(f"exit {code}")
    assert "Traceback" not in out + err
    if code == 2:
        assert out == ""
        assert err.count("\n") == 1 and err.endswith("\n"), err
        assert len(err.splitlines()) == 1, err  # nothing that splitlines() breaks either
        assert err.startswith("error: tests/x.feature:"), err
    else:
        assert code in (0, 1), (code, err)
        assert err == ""
        shown = out.splitlines()
        assert len(shown) == out.count("\n"), out  # one line per scenario, whatever its name
        assert all(line.startswith(RESULT) for line in shown), out
        assert shown[-1].startswith("workflow tests: ")
        assert (code == 1) == any(line.startswith("FAILED") for line in shown)


@EXAMPLES
@given(text=texts)
def test_any_text_as_a_feature_file_gives_0_1_or_one_error_line(
    text: str, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check(text.encode(), workspace, capsys)


@EXAMPLES
@given(data=st.binary(max_size=300))
def test_any_bytes_as_a_feature_file_give_0_1_or_one_error_line(
    data: bytes, workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _check(data, workspace, capsys)
