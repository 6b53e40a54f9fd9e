"""`daskstep render --backend kubernetes`: every object a run would create, checked without a
cluster against the schemas a real API server would enforce.

- The DaskCluster against the dask-kubernetes operator's own CRD (the openAPIV3Schema shipped
  in its wheel), and for pruning: a structural schema silently drops fields it does not know,
  so any field we render must be one it keeps.
- Every core object with kubernetes-validate in strict mode (unknown fields are errors), for
  Kubernetes 1.29 (native sidecars on by default) and the newest it knows.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Any

import dask.config
import dask_kubernetes
import jsonschema
import kubernetes_validate
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from daskstep.cli import main as cli_main
from daskstep.kube.objects import KubeOptions, is_dns_label
from daskstep.kube.render import render
from daskstep.workflow.limits import load_limits
from daskstep.workflow.spec import check

CRD = (
    Path(dask_kubernetes.__file__).parent
    / "operator/deployment/helm/dask-kubernetes-operator/crds/daskcluster.yaml"
)
VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
UID = "4f6c1a8e-2d55-4c5e-9a8e-3b1f0e7c9d21"


def workflow_of(kerberos: bool = False, voms_proxy: bool = False, dask: bool = True) -> Any:
    resources: dict[str, Any] = {"kerberos": kerberos, "voms_proxy": voms_proxy}
    if dask:
        resources["dask"] = {
            "image": "docker.io/coffeateam/coffea-dask-almalinux8:2024.5.0-py3.11",
            "number_of_workers": 3,
            "single_worker_memory": "3Gi",
            "single_worker_threads": 2,
        }
    document = {
        "workflow": {
            "type": "serial",
            "resources": resources,
            "specification": {
                "steps": [
                    {"name": "Fit & plot", "environment": "python:3.11", "commands": ["a", "b"]},
                    {"environment": "python:3.11", "commands": ["python summary.py"]},
                ]
            },
        }
    }
    workflow, problems = check(document, load_limits())
    assert workflow is not None, problems
    return workflow


SPECS = {
    "plain": workflow_of(),
    "kerberos": workflow_of(kerberos=True),
    "voms": workflow_of(voms_proxy=True),
    "both": workflow_of(kerberos=True, voms_proxy=True),
}
OPTIONS = KubeOptions(namespace="analysis", run_id="ds-0123456789", root_uid=UID)


@pytest.fixture(scope="module")
def crd_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def pruned(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """The fields a structural schema would drop on the floor, as the API server does."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    if isinstance(value, dict):
        known = schema.get("properties")
        extra = schema.get("additionalProperties")
        lost = []
        for key, item in value.items():
            if known is not None and key in known:
                lost += pruned(item, known[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                lost += pruned(item, extra, f"{path}.{key}")
            elif path or key not in ("apiVersion", "kind", "metadata"):
                lost.append(f"{path}.{key}")
        return lost
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [p for i, v in enumerate(value) for p in pruned(v, schema["items"], f"{path}[{i}]")]
    return []


def crd_problems(cluster: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    found = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in validator.iter_errors(cluster)]
    return found + [f"{p}: pruned by the CRD's structural schema" for p in pruned(cluster, schema)]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


@pytest.mark.parametrize("name", SPECS)
def test_the_daskcluster_passes_the_operators_crd_and_nothing_is_pruned(
    name: str, crd_schema: dict[str, Any]
) -> None:
    [cluster] = by_kind(render(SPECS[name], "", OPTIONS), "DaskCluster")
    assert crd_problems(cluster, crd_schema) == []


@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("version", VERSIONS)
def test_every_core_object_passes_strict_kubernetes_schemas(name: str, version: str) -> None:
    objects = [o for o in render(SPECS[name], "x: 1\n", OPTIONS) if o["kind"] != "DaskCluster"]
    assert {o["kind"] for o in objects} >= {"ConfigMap", "Job", "NetworkPolicy", "Role"}
    for obj in objects:
        kubernetes_validate.validate(obj, version, strict=True)


def test_the_checks_can_fail(crd_schema: dict[str, Any]) -> None:
    """What a real API server would refuse or drop, each caught by the checks above."""
    [cluster] = by_kind(render(SPECS["kerberos"], "", OPTIONS), "DaskCluster")
    worker = cluster["spec"]["worker"]["spec"]
    worker["containers"][0]["readinessProbe"]["httpGet"]["port"] = 8788  # the CRD says string
    worker["initContainers"] = [{"name": "k", "image": "i", "restartPolicy": "Always"}]
    problems = "\n".join(crd_problems(cluster, crd_schema))
    assert "8788 is not of type 'string'" in problems
    assert "initContainers[0].restartPolicy: pruned" in problems

    [job, *_] = by_kind(render(SPECS["plain"], "", OPTIONS), "Job")
    job["spec"]["template"]["spec"]["containers"][0]["sidecar"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, VERSIONS[0], strict=True)


def test_what_the_objects_say() -> None:
    objects = render(SPECS["both"], "workflow: {}\n", OPTIONS)
    kinds = [o["kind"] for o in objects]
    assert kinds[0] == "ConfigMap" and kinds.count("Job") == 2
    root = objects[0]
    assert "ownerReferences" not in root["metadata"]
    for obj in objects[1:]:  # one root owns everything: deleting it deletes the run
        [owner] = obj["metadata"]["ownerReferences"]
        assert owner == {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "name": root["metadata"]["name"],
            "uid": UID,
            "blockOwnerDeletion": True,
        }
        assert obj["metadata"]["labels"]["daskstep.io/run"] == "ds-0123456789"

    [cluster] = by_kind(objects, "DaskCluster")
    worker = cluster["spec"]["worker"]
    assert worker["replicas"] == 3
    dask, *sidecars = worker["spec"]["containers"]
    assert dask["args"][:8] == [
        "dask",
        "worker",
        "--nthreads",
        "2",
        "--memory-limit",
        str(3 * 2**30),
        "--death-timeout",
        "60",
    ]
    quota = {"memory": "3Gi", "cpu": "2"}
    assert dask["resources"] == {"requests": quota, "limits": quota}
    assert [s["name"] for s in sidecars] == ["kerberos", "voms"]
    env = {e["name"]: e for e in dask["env"]}
    assert env["KRB5CCNAME"]["value"] == "FILE:/daskstep/credentials/krb5cc"
    assert env["X509_USER_PROXY"]["value"] == "/daskstep/credentials/x509up"
    scheduler = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["args"][:2] == ["dask", "scheduler"] and "8786" in scheduler["args"]
    assert scheduler["readinessProbe"]["httpGet"]["port"] == "http-dashboard"

    job = by_kind(objects, "Job")[0]
    assert job["metadata"]["name"] == "ds-0123456789-1-fit-plot"
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["backoffLimit"] == 0 and pod["restartPolicy"] == "Never"
    first, *natives = pod["initContainers"]
    assert first["command"] == ["daskstep", "entrypoint", "install", "/install"]
    assert [(c["name"], c["restartPolicy"]) for c in natives] == [
        ("logs", "Always"),
        ("kerberos", "Always"),
        ("voms", "Always"),
    ]
    [step] = pod["containers"]
    assert step["image"] == "python:3.11"
    argv = step["command"]
    assert argv[:2] == ["python3", "/daskstep/bin/entrypoint.pyz"]
    scheduler_uri = "tls://ds-0123456789-scheduler.analysis.svc.cluster.local:8786"
    assert argv[argv.index("--scheduler") + 1] == scheduler_uri
    assert argv[argv.index("--termination-log") + 1] == step["terminationMessagePath"]
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--shell"] == ["a", "b"]
    assert step["livenessProbe"]["httpGet"]["port"] == "health"
    [fail_fast, _evicted] = job["spec"]["podFailurePolicy"]["rules"]
    assert fail_fast["onExitCodes"]["values"] == [69, 75, 78]

    # the second Job waits for the first one's status, under this run's id in the workspace
    status = argv[argv.index("--status-file") + 1]
    assert status == "/workspace/.daskstep/runs/ds-0123456789/steps/01-fit-plot.json"
    later = by_kind(objects, "Job")[1]["spec"]["template"]["spec"]["initContainers"]
    assert [c["name"] for c in later[:2]] == ["entrypoint", "after-previous-step"]
    assert later[1]["command"] == ["daskstep", "wait-step", status]
    assert "after-previous-step" not in [c["name"] for c in pod["initContainers"]]

    [fence] = by_kind(objects, "NetworkPolicy")
    run = {"matchLabels": {"daskstep.io/run": "ds-0123456789"}}
    assert fence["spec"]["podSelector"] == run
    assert fence["spec"]["ingress"] == [{"from": [{"podSelector": run}]}]


def test_secrets_are_referenced_never_inline() -> None:
    text = yaml.safe_dump_all(render(SPECS["both"], "", OPTIONS))
    for obj in render(SPECS["both"], "", OPTIONS):
        for container in _containers(obj):
            for variable in container.get("env", []):
                if variable["name"] in ("CERN_USER", "CERN_KEYTAB", "VONAME"):
                    assert "value" not in variable
                    assert variable["valueFrom"]["secretKeyRef"]["name"] == "reana-secretsstore"
    assert "VOMSPROXY_PASS:" not in text
    secrets = [o for o in render(SPECS["both"], "", OPTIONS) if o["kind"] == "Secret"]
    assert [s["metadata"]["name"] for s in secrets] == ["ds-0123456789-tls"]  # the run's own


def test_the_runs_tls_travels_as_a_secret_its_root_owns() -> None:
    import base64

    objects = render(SPECS["both"], "", OPTIONS)
    [secret] = by_kind(objects, "Secret")
    assert secret["metadata"]["ownerReferences"][0]["uid"] == UID
    files = {k: base64.b64decode(v) for k, v in secret["data"].items()}
    assert sorted(files) == ["ca.pem", "client-key.pem", "client.pem", "cluster-key.pem",
                             "cluster.pem"]  # fmt: skip
    assert b"PRIVATE KEY" not in files["ca.pem"]  # the CA's key was never kept
    assert objects.index(secret) < objects.index(by_kind(objects, "DaskCluster")[0])
    [cluster] = by_kind(objects, "DaskCluster")
    scheduler = cluster["spec"]["scheduler"]["spec"]["containers"][0]
    assert scheduler["args"][scheduler["args"].index("--protocol") + 1] == "tls"
    assert scheduler["args"][scheduler["args"].index("--tls-key") + 1] == (
        "/daskstep/tls/cluster-key.pem"
    )
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    assert "--tls-cert" in worker["args"]
    env = {e["name"]: e.get("value") for e in worker["env"]}
    assert env["DASK_SCHEDULER_ADDRESS"].startswith("tls://")  # not the operator's tcp://
    [step] = by_kind(objects, "Job")[0]["spec"]["template"]["spec"]["containers"]
    assert step["command"][step["command"].index("--tls-dir") + 1] == "/daskstep/tls"
    pods = [cluster["spec"]["scheduler"]["spec"], cluster["spec"]["worker"]["spec"]]
    pods += [job["spec"]["template"]["spec"] for job in by_kind(objects, "Job")]
    for pod in pods:
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["daskstep-tls"]["secret"]["secretName"] == "ds-0123456789-tls"
    plain = render(SPECS["both"], "", dataclasses.replace(OPTIONS, tls=False))
    assert not by_kind(plain, "Secret") and "--tls-dir" not in str(plain)


def _containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    if obj["kind"] == "Job":
        pod = obj["spec"]["template"]["spec"]
        return pod["containers"] + pod["initContainers"]
    if obj["kind"] == "DaskCluster":
        return [
            c for part in ("worker", "scheduler") for c in obj["spec"][part]["spec"]["containers"]
        ]
    return []


def test_without_a_dask_cluster_only_the_steps_run() -> None:
    objects = render(workflow_of(dask=False), "", OPTIONS)
    assert not by_kind(objects, "DaskCluster")
    [job, _] = by_kind(objects, "Job")
    assert "--scheduler" not in job["spec"]["template"]["spec"]["containers"][0]["command"]


def _daskstep(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    daskstep = Path(sys.executable).parent / "daskstep"
    return subprocess.run(
        [str(daskstep), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )


def test_the_cli_prints_yaml_that_reads_back(tmp_path: Path) -> None:
    reana = tmp_path / "reana.yaml"
    reana.write_text(yaml.safe_dump({"workflow": SPECS_DOC}))
    out = _daskstep(
        "render",
        str(reana),
        "--backend",
        "kubernetes",
        "--namespace",
        "ns1",
        "--run-id",
        "ds-abc",
        "--dashboard-host",
        "dask.example.org",
    )
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    assert "--root-uid" in out.stdout  # the comment saying how to get owner references
    assert "kubectl create secret generic ds-abc-tls -n ns1" in out.stdout  # and the Secret
    assert [o["kind"] for o in objects] == [
        "ConfigMap",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "NetworkPolicy",
        "DaskCluster",
        "DaskAutoscaler",  # on unless told otherwise, as REANA's
        "Ingress",
        "Job",
    ]
    assert objects[0]["data"]["reana.yaml"] == reana.read_text()
    assert all(o["metadata"]["namespace"] == "ns1" for o in objects)
    for obj in objects:
        if obj["kind"] not in ("DaskCluster", "DaskAutoscaler"):  # the operator's: its CRDs
            kubernetes_validate.validate(obj, VERSIONS[-1], strict=True)


SPECS_DOC = {
    "type": "serial",
    "resources": {"dask": {"image": "ghcr.io/dask/dask:2024.1.0"}},
    "specification": {"steps": [{"environment": "ghcr.io/dask/dask:2024.1.0", "commands": ["x"]}]},
}


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("--run-id", "Run_1", "--run-id: 'Run_1' is not a Kubernetes name"),
        ("--run-id", "x" * 40, "at most 30"),
        ("--namespace", "My.NS", "--namespace: 'My.NS' is not a Kubernetes name"),
        ("--workspace-subpath", "../other", "--workspace-subpath: '../other' must be a relative"),
        ("--ingress-namespace", "Ingress", "--ingress-namespace: 'Ingress' is not a Kubernetes"),
        ("--daskstep-image", "a b", "--daskstep-image: 'a b' is not a container image"),
        ("--tls-dir", "reana.yaml", "reana.yaml is a file; give a folder"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(tmp_path: Path, option: str, value: str, says: str):
    reana = tmp_path / "reana.yaml"
    reana.write_text(yaml.safe_dump({"workflow": SPECS_DOC}))
    out = _daskstep("render", str(reana), option, value, cwd=tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "Traceback" not in out.stderr


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=1, max_size=40))
@example("0\n")  # `$` matches before a last newline: the check must not (found by CI)
def test_any_run_id_either_renders_valid_names_or_is_refused(run_id: str) -> None:
    import argparse

    from daskstep.errors import InputError
    from daskstep.kube.options import options_from

    args = argparse.Namespace(run_id=run_id, namespace="ns", root_uid=UID)
    try:
        options = options_from(args)
    except InputError as e:
        [line] = e.lines()
        assert line.startswith("error: --run-id:") and "\n" not in line
        return
    for obj in render(SPECS["plain"], "", options):
        assert is_dns_label(obj["metadata"]["name"])


def test_every_rendered_command_line_parses_with_the_real_parsers() -> None:
    """A rendered flag the program does not know would only fail in the cluster."""
    import re

    from daskstep.cli import _parser
    from entrypoint.__main__ import parse as parse_entrypoint
    from sidecar.kerberos import build_parser as kerberos_parser
    from sidecar.voms import build_parser as voms_parser

    seen = set()
    for obj in render(SPECS["both"], "", OPTIONS):
        for container in _containers(obj):
            argv = [re.sub(r"\$\((\w+)\)", r"\1", a) for a in container.get("command", [])]
            if argv[:2] == ["python3", "/daskstep/bin/entrypoint.pyz"]:
                args = parse_entrypoint(argv[2:])
                assert args.health_port == 8080 and args.scheduler.startswith("tls://")
                assert args.tls_dir == "/daskstep/tls"
            elif argv[:3] == ["daskstep", "sidecar", "kerberos"]:
                kerberos_parser().parse_args(argv[3:])
            elif argv[:3] == ["daskstep", "sidecar", "voms"]:
                args = voms_parser().parse_args(argv[3:])
                assert args.private_key_copy and args.passphrase_base64_file
            elif argv:
                _parser().parse_args(argv[1:])  # logs, entrypoint install
            seen.add(" ".join(argv[:3]))
    assert len(seen) >= 5, seen


# -- render for GitOps (issue 19): no private key, the same output, a pullable image, a fence ---
def _reana(tmp_path: Path, document: dict | None = None) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    reana = tmp_path / "reana.yaml"
    reana.write_text(yaml.safe_dump({"workflow": document or SPECS_DOC}))
    return reana


def _rendered(out: subprocess.CompletedProcess) -> list[dict[str, Any]]:
    assert out.returncode == 0, out.stderr
    objects = [o for o in yaml.safe_load_all(out.stdout) if o]
    for obj in objects:
        if obj["kind"] not in ("DaskCluster", "DaskAutoscaler"):  # the operator's: its CRDs
            for version in VERSIONS:
                kubernetes_validate.validate(obj, version, strict=True)
    return objects


def _secret_volumes(objects: list[dict[str, Any]]) -> set[str]:
    pods = [o["spec"]["template"]["spec"] for o in by_kind(objects, "Job")]
    for cluster in by_kind(objects, "DaskCluster"):
        pods += [cluster["spec"][part]["spec"] for part in ("scheduler", "worker")]
    return {v["secret"]["secretName"] for p in pods for v in p.get("volumes", []) if "secret" in v}


def test_by_default_no_private_key_is_in_the_output(tmp_path: Path) -> None:
    """The run's TLS keys were inline in a Secret: unsafe for GitOps."""
    out = _daskstep("render", str(_reana(tmp_path)), "--namespace", "ns1", "--run-id", "ds-abc")
    objects = _rendered(out)
    assert "PRIVATE KEY" not in out.stdout and not by_kind(objects, "Secret")
    assert _secret_volumes(objects) == {"ds-abc-tls"}  # the pods still use the run's TLS
    [line] = out.stderr.splitlines()  # and the user is told how to make the Secret
    assert line.startswith("daskstep: the pods mount the Secret ds-abc-tls") and line.endswith(
        "render with --tls-dir DIR to make its files, then create it: "
        "kubectl create secret generic ds-abc-tls -n ns1 --from-file=DIR"
    )


def test_tls_dir_makes_the_files_once_then_reads_them(tmp_path: Path) -> None:
    import base64
    import stat

    reana, folder = _reana(tmp_path), tmp_path / "tls"
    first = _daskstep("render", str(reana), "--run-id", "ds-abc", "--tls-dir", str(folder))
    assert "PRIVATE KEY" not in first.stdout and not by_kind(_rendered(first), "Secret")
    assert (
        f"create it: kubectl create secret generic ds-abc-tls -n default --from-file={folder}"
        in (first.stderr)
    )
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    made = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert sorted(made) == ["ca.pem", "client-key.pem", "client.pem", "cluster-key.pem",
                            "cluster.pem"]  # fmt: skip
    assert all(stat.S_IMODE((folder / n).stat().st_mode) == 0o600 for n in made if "key" in n)
    again = _daskstep("render", str(reana), "--run-id", "ds-abc", "--tls-dir", str(folder))
    assert again.stdout == first.stdout and "made the run's CA" not in again.stderr
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == made  # read, not made again

    # inline, on request: the Secret holds those very files, and renders the same each time
    inline = ["render", str(reana), "--tls-secret", "inline", "--tls-dir", str(folder)]
    out, out_again = _daskstep(*inline), _daskstep(*inline)
    assert out.stdout == out_again.stdout and "its private keys" in out.stdout
    [secret] = by_kind(_rendered(out), "Secret")
    assert {k: base64.b64decode(v) for k, v in secret["data"].items()} == made


def test_a_half_made_or_expired_tls_dir_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import datetime

    from daskstep import tls as run_tls

    reana, folder = _reana(tmp_path), tmp_path / "tls"
    folder.mkdir()
    (folder / "ca.pem").write_text("x")
    out = _daskstep("render", str(reana), "--tls-dir", str(folder))
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith(f"error: --tls-dir: {folder} lacks client-key.pem, client.pem")

    def expired(subject: Any, issuer: Any, public_key: Any, days: int = 30) -> Any:
        from cryptography import x509

        now = datetime.datetime.now(datetime.timezone.utc)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=40))
            .not_valid_after(now - datetime.timedelta(days=10))
        )

    monkeypatch.setattr(run_tls, "_builder", expired)
    run_tls.RunTLS.create(tmp_path / "old", "ds-old")
    out = _daskstep("render", str(reana), "--tls-dir", str(tmp_path / "old"))
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()
    ended = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=10)
    assert line == (
        f"error: --tls-dir: {tmp_path / 'old'}/ca.pem expired on {ended:%Y-%m-%d}; empty the "
        "folder to make new ones, and create the Secret again"
    )


@pytest.mark.parametrize(
    "options",
    [[], ["--namespace", "ns1", "--dashboard-host", "dask.example.org"], ["--tls", "off"]],
    ids=["defaults", "placed", "no-tls"],
)
def test_the_same_input_renders_byte_identical_output(
    tmp_path: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every render made a new run id and new keys: nothing a GitOps repository can hold."""
    reana = _reana(tmp_path)
    first, second = (_daskstep("render", str(reana), *options) for _ in range(2))  # processes
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout and first.stderr == second.stderr
    [root, *_] = _rendered(first)
    run_id = root["metadata"]["name"]
    assert is_dns_label(run_id, 30) and run_id.startswith("ds-")

    def root_name(*args: str) -> str:  # in this process: the objects were checked above
        assert cli_main(["render", *args, *options]) == 0
        return next(yaml.safe_load_all(capsys.readouterr().out))["metadata"]["name"]

    # another input, or another placement, is another run; --run-id names it outright
    other = _reana(tmp_path / "other", {**SPECS_DOC, "resources": {"dask": {"image": "a/b:1"}}})
    assert root_name(str(other)) != run_id
    assert root_name(str(reana), "--workspace-subpath", "elsewhere") != run_id
    assert root_name(str(reana), "--run-id", "ds-mine") == "ds-mine"
    # the root's uid, known only after a first apply, keeps the run id
    assert root_name(str(reana), "--root-uid", UID) == run_id
    assert root_name(str(reana)) == run_id  # and this process renders what the others did


def test_the_default_daskstep_image_is_a_pullable_reference(tmp_path: Path) -> None:
    """`daskstep:0.1.0` is docker.io/library/daskstep to containerd, and CRI-O refuses it."""
    from daskstep.kube.objects import daskstep_version

    objects = _rendered(_daskstep("render", str(_reana(tmp_path))))
    images = {
        c["image"]
        for job in by_kind(objects, "Job")
        for c in job["spec"]["template"]["spec"]["containers"]
        + job["spec"]["template"]["spec"]["initContainers"]
    }
    ours = {i for i in images if i != SPECS_DOC["resources"]["dask"]["image"]}
    assert ours == {f"ghcr.io/daskstep/daskstep:{daskstep_version()}"}
    for image in ours:  # a registry host first: resolved the same by every runtime
        registry = image.split("/")[0]
        assert "." in registry and image.count("/") >= 2


@pytest.mark.parametrize(
    ("given", "admitted"),
    [([], "ingress-nginx"), (["--ingress-namespace", "nginx-system"], "nginx-system")],
)
def test_the_dashboard_port_is_open_only_to_the_ingress_controller(
    tmp_path: Path, given: list[str], admitted: str
) -> None:
    """With --dashboard-host, 8787 was open to every namespace, around the Ingress's auth."""
    out = _daskstep("render", str(_reana(tmp_path)), "--dashboard-host", "d.example.org", *given)
    [fence] = by_kind(_rendered(out), "NetworkPolicy")
    run = {"matchLabels": {"daskstep.io/run": fence["metadata"]["labels"]["daskstep.io/run"]}}
    assert fence["spec"]["ingress"] == [
        {"from": [{"podSelector": run}]},
        {
            "from": [
                {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": admitted}}}
            ],
            "ports": [{"protocol": "TCP", "port": 8787}],
        },
    ]


def test_every_render_and_placement_option_says_what_it_does_and_its_default() -> None:
    from daskstep.cli import _parser

    parser = _parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    seen = []
    for name in ("render", "run"):
        for action in commands.choices[name]._actions:
            if not action.option_strings or action.dest == "help":
                continue
            if name == "run" and action.container.title != "kubernetes":
                continue
            seen.append(action.option_strings[0])
            assert action.help and "default" in action.help, (name, action.option_strings)
    assert {"--namespace", "--secrets-name", "--workspace-claim", "--tls-secret"} <= set(seen)


def test_adapt_renders_the_operators_autoscaler_owned_by_the_root_with_the_api_on() -> None:
    """REANA's DaskAutoscaler (0 to number_of_workers), valid against the operator's own CRD
    with nothing pruned, and the scheduler's HTTP API on, so that the operator retires workers
    (their data moved) instead of deleting the newest pods."""
    crd = yaml.safe_load((CRD.parent / "daskautoscaler.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    objects = render(SPECS["plain"], "", dataclasses.replace(OPTIONS, adapt=True))
    [autoscaler] = by_kind(objects, "DaskAutoscaler")
    [cluster] = by_kind(objects, "DaskCluster")
    assert crd_problems(autoscaler, schema) == []
    assert autoscaler["apiVersion"] == f"{crd['spec']['group']}/v1"
    assert autoscaler["spec"] == {"cluster": cluster["metadata"]["name"], "minimum": 0,
                                  "maximum": 3}  # fmt: skip
    [owner] = autoscaler["metadata"]["ownerReferences"]
    assert owner["kind"] == "ConfigMap" and owner["uid"] == UID
    assert objects.index(autoscaler) > objects.index(cluster)  # its cluster exists first

    [scheduler] = cluster["spec"]["scheduler"]["spec"]["containers"]
    [routes] = [e["value"] for e in scheduler["env"] if e["name"].endswith("HTTP__ROUTES")]
    config = dask.config.collect_env({"DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES": routes})
    served = config["distributed"]["scheduler"]["http"]["routes"]
    assert "distributed.http.scheduler.api" in served
    assert set(dask.config.get("distributed.scheduler.http.routes")) <= set(served)

    plain = render(SPECS["plain"], "", OPTIONS)
    assert by_kind(plain, "DaskAutoscaler") == []
    [fixed] = by_kind(plain, "DaskCluster")
    assert "env" not in fixed["spec"]["scheduler"]["spec"]["containers"][0]


def test_the_autoscaler_is_on_as_reanas_unless_the_limits_or_the_command_line_say_off(
    tmp_path: Path,
) -> None:
    reana = str(_reana(tmp_path))
    off = tmp_path / "limits.yaml"
    off.write_text("autoscaler: false\n")

    def autoscalers(*args: str) -> int:
        return [o["kind"] for o in _rendered(_daskstep("render", reana, *args))].count(
            "DaskAutoscaler"
        )

    assert autoscalers() == 1  # REANA's DASK_AUTOSCALER_ENABLED is on by default
    assert autoscalers("--no-adapt") == 0
    assert autoscalers("--limits", str(off)) == 0  # the platform's switch
    assert autoscalers("--limits", str(off), "--adapt") == 1  # the command line over it
