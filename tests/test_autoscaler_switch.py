"""Whether a run's workers follow the work: `--adapt`/`--no-adapt`, else the site file's
`autoscaler`, else the limits file's (the platform's, as REANA's DASK_AUTOSCALER_ENABLED),
else the backend's default (on for Kubernetes, as REANA's; off elsewhere)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from conftest import daskstep, write_workflow
from hypothesis import given
from hypothesis import strategies as st

from daskstep.backends.registry import RunOptions, kind_of
from daskstep.batch.site import load_site
from daskstep.errors import InputError
from daskstep.scaling import Adapt
from daskstep.wiring import adaptive_limits
from daskstep.workflow.limits import load_limits
from daskstep.workflow.spec import load_workflow


def workflow(tmp_path: Path, limits: str | None = None):
    reana = write_workflow(tmp_path, [("one", ["true"])], workers=4)
    path = None
    if limits is not None:
        path = tmp_path / "limits.yaml"
        path.write_text(limits)
    return load_workflow(reana, load_limits(path))[0]


def decided(tmp_path: Path, backend: str, adapt=None, limits=None, site=None) -> Adapt | None:
    site_file = None
    if site is not None:
        site_file = tmp_path / "site.yaml"
        site_file.write_text(site)
    wf = workflow(tmp_path, limits)
    kind = kind_of(backend)(wf, RunOptions(site=str(site_file) if site_file else None, adapt=adapt))
    return adaptive_limits(wf, kind)


@pytest.mark.parametrize(
    ("backend", "expected"),
    [
        ("local", None),
        ("docker", None),
        ("slurm", None),
        ("htcondor", None),
        ("kubernetes", Adapt(0, 4)),  # REANA's default
    ],
)
def test_the_backends_default(tmp_path: Path, backend: str, expected: Adapt | None) -> None:
    assert decided(tmp_path, backend) == expected


def test_the_limits_file_then_the_site_file_then_the_command_line(tmp_path: Path) -> None:
    assert decided(tmp_path, "local", limits="autoscaler: true\n") == Adapt(1, 4)
    assert decided(tmp_path, "slurm", limits="autoscaler: true\n") == Adapt(0, 4)
    assert decided(tmp_path, "kubernetes", limits="autoscaler: false\n") is None
    on, off = "autoscaler: true\n", "autoscaler: false\n"
    assert decided(tmp_path, "slurm", limits=on, site=off) is None
    assert decided(tmp_path, "slurm", limits=off, site=on) == Adapt(0, 4)
    assert decided(tmp_path, "slurm", limits=on, site=on, adapt=False) is None
    assert decided(tmp_path, "docker", limits=off, site=off, adapt=True) == Adapt(1, 4)
    assert decided(tmp_path, "local", limits="autoscaler: ~\n") is None  # unset: the default


@given(st.one_of(st.integers(), st.text(max_size=8), st.lists(st.booleans(), max_size=2)))
def test_a_switch_that_is_not_true_or_false_is_one_line_naming_it(value) -> None:
    import yaml

    text = yaml.safe_dump({"autoscaler": value})
    if isinstance(yaml.safe_load(text)["autoscaler"], bool | None):
        return  # YAML read it as a switch after all (a text such as "true")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "platform.yaml"
        path.write_text(text)
        for load in (load_limits, load_site):
            with pytest.raises(InputError) as raised:
                load(path)
            [line] = str(raised.value).splitlines()
            assert line.startswith("autoscaler: expected true or false, got ")
            assert line.endswith("; write e.g. autoscaler: true")


@pytest.mark.integration
def test_a_bad_switch_in_the_limits_file_starts_nothing(tmp_path: Path) -> None:
    reana = write_workflow(tmp_path, [("one", ["true"])])
    (tmp_path / "limits.yaml").write_text("autoscaler: sometimes\n")
    proc = daskstep("run", str(reana), "--limits", str(tmp_path / "limits.yaml"))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and out == "", err
    assert err.splitlines() == [
        f"error: {tmp_path / 'limits.yaml'}: autoscaler: expected true or false, got "
        "'sometimes'; write e.g. autoscaler: true"
    ]
    assert not (tmp_path / ".daskstep" / "runs").exists()


@pytest.mark.parametrize(
    "text", ['default_single_worker_memory: "2Gi\\n"\n', 'walltime: "01:00\\n"\n']
)
def test_a_value_with_a_last_newline_is_refused(tmp_path: Path, text: str) -> None:
    """A pattern's `$` matches before a last newline; the checks take the whole value."""
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    load = load_limits if text.startswith("default") else load_site
    with pytest.raises(InputError):
        load(path)
