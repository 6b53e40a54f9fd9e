"""HTCondor, behind the BatchSystem interface: workers through dask-jobqueue's HTCondorJob, a
step as a vanilla-universe job run in place in the shared workspace, and the queue read with
`condor_q` (jobs still queued) and `condor_history` (jobs that left it).

The run's jobs carry `DaskstepRun` and `DaskstepController` attributes; their output streams
into the workspace while they run (`stream_output`), so logs are live, not copied at the end.
"""

from __future__ import annotations

import re
import shlex
import signal as signals
from pathlib import Path
from typing import Any

from daskstep.batch import jobqueue
from daskstep.batch.systems import BatchSystem, JobState, abandoned, run_command
from daskstep.errors import ClusterError
from daskstep.procutil import controller_mark

STATUS = {1: "Idle", 2: "Running", 3: "Removed", 4: "Completed", 5: "Held", 6: "Transferring",
          7: "Suspended"}  # fmt: skip
FIELDS = ["ClusterId", "ProcId", "JobStatus", "HoldReason", "RemoveReason", "ExitCode",
          "RemoteHost", "LastRemoteHost"]  # fmt: skip


def _classad_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _machine(slots: list[str]) -> str:
    """The machine of a slot (`slot1_1@n1`): where the job runs now, else where it last ran."""
    for slot in slots:
        if slot and slot != "undefined":
            return slot.rpartition("@")[2]
    return ""


class HTCondor(BatchSystem):
    name = "htcondor"
    compute_backend = "htcondorcern"
    submit = "condor_submit"
    controller_name = "the HTCondor collector"

    def controller(self) -> tuple[str, int] | None:
        """COLLECTOR_HOST (`host[:port]`, 9618 by default), from condor_config_val."""
        try:
            out = run_command(["condor_config_val", "COLLECTOR_HOST"], "asking HTCondor")
        except ClusterError:
            return None
        value = out.strip().split(",")[0].split("?")[0]  # the first collector; no sinful extras
        host, _, port = value.strip("<>").rpartition(":") if ":" in value else (value, "", "")
        if not host:
            return None
        return host.strip("[]"), int(port) if port.isdigit() else 9618

    def _tags(self, run_id: str) -> dict[str, str]:
        return {
            "+DaskstepRun": _classad_string(run_id),
            "+DaskstepController": _classad_string(controller_mark()),
            "batch_name": run_id,
        }

    def _site_directives(self) -> dict[str, str]:
        directives = {}
        if self.site.accounting_group:
            directives["accounting_group"] = self.site.accounting_group
        if self.site.requirements:
            directives["requirements"] = self.site.requirements
        for line in self.site.extra_directives:
            key, _, value = line.partition("=")
            directives[key.strip()] = value.strip()
        return directives

    def worker_job(self, scheduler, name, run_id, threads, memory, log, environment, security=None):  # type: ignore[no-untyped-def]
        HTCondorJob = jobqueue("htcondor").HTCondorJob

        extra = dict(self._extra_dict())
        extra.update(self._site_directives())
        extra.update(self._tags(run_id))
        extra.update({"output": str(log), "stream_output": "True"})
        return HTCondorJob(
            scheduler=scheduler,
            disk=f"{self.site.disk}MiB",
            job_extra_directives=extra,
            **self._common(threads, memory, name, environment, security),
        )

    def _extra_dict(self) -> dict[str, Any]:
        import dask.config

        return dict(dask.config.get("jobqueue.htcondor.job-extra-directives", {}) or {})

    def submit_step(self, argv, name, run_id, output, workdir, options):  # type: ignore[no-untyped-def]
        quote_arguments = jobqueue("htcondor").quote_arguments

        description = {
            "universe": "vanilla",
            "executable": "/bin/sh",
            "arguments": '"' + quote_arguments(["-c", "exec 2>&1; exec " + shlex.join(argv)]) + '"',
            "initialdir": str(workdir),
            "should_transfer_files": "NO",
            "output": str(output),
            "stream_output": "True",
            "request_cpus": options.get("htcondor_request_cpus", "1"),
            "request_memory": options.get("htcondor_request_memory", "1024"),
            "request_disk": options.get("htcondor_request_disk", str(self.site.disk * 1024)),
            **self._site_directives(),
            **self._tags(run_id),
        }
        if options.get("htcondor_max_runtime"):
            description["+MaxRuntime"] = options["htcondor_max_runtime"]
        if options.get("htcondor_accounting_group"):
            description["accounting_group"] = options["htcondor_accounting_group"]
        path = Path(output).with_suffix(".sub")
        path.write_text("".join(f"{k} = {v}\n" for k, v in description.items()) + "queue\n")
        out = run_command(["condor_submit", str(path)], f"submitting step {name}")
        match = re.search(r"submitted to cluster (\d+)", out)
        if match is None:
            raise ClusterError(f"submitting step {name}: condor_submit said {out.strip()!r}")
        return f"{match.group(1)}.0"

    def _ads(self, command: str, constraint: str, fields: list[str]) -> list[list[str]]:
        argv = [command, "-af:t", *fields, "-constraint", constraint]
        if command == "condor_q":
            argv.insert(1, "-allusers")
        out = run_command(argv, f"asking HTCondor ({command})")
        return [line.split("\t") for line in out.splitlines() if line.strip()]

    def states(self, job_ids: list[str]) -> dict[str, JobState]:
        if not job_ids:
            return {}
        constraint = " || ".join(
            f"(ClusterId == {c} && ProcId == {p})" for c, p in (j.split(".") for j in job_ids)
        )
        found: dict[str, JobState] = {}
        for command in ("condor_q", "condor_history"):
            missing = [j for j in job_ids if j not in found]
            if not missing:
                break
            for row in self._ads(command, constraint, FIELDS):
                job_id = f"{row[0]}.{row[1]}"
                if job_id in found or job_id not in job_ids:
                    continue
                status = STATUS.get(int(row[2]) if row[2].isdigit() else 0, row[2])
                reason = next((r for r in row[3:5] if r and r != "undefined"), "")
                code = int(row[5]) if row[5].lstrip("-").isdigit() else None
                found[job_id] = JobState(status, reason, code, node=_machine(row[6:8]))
        return {j: found.get(j, JobState("GONE")) for j in job_ids}

    def exit_code(self, job_id: str) -> int | None:
        state = self.states([job_id])[job_id]
        return state.exit_code

    def queued(self, run_id: str) -> list[str]:
        rows = self._ads("condor_q", f"DaskstepRun == {_classad_string(run_id)}", ["GlobalJobId"])
        return [row[0] for row in rows]

    def cancel_run(self, run_id: str) -> None:
        if self.queued(run_id):
            constraint = f"DaskstepRun == {_classad_string(run_id)}"
            run_command(["condor_rm", "-constraint", constraint], "removing the run's jobs")

    def signal(self, job_id: str, signum: int) -> None:
        """HTCondor delivers only its own kill signal (SIGTERM, then SIGKILL): a removal."""
        argv = ["condor_rm", job_id]
        if signum == signals.SIGKILL:
            argv.insert(1, "-forcex")
        try:
            run_command(argv, f"removing HTCondor job {job_id}")
        except ClusterError:
            if self.states([job_id])[job_id].state not in ("Removed", "Completed", "GONE"):
                raise

    def abandoned_runs(self, everything: bool = False) -> set[str]:
        rows = self._ads(
            "condor_q", "DaskstepRun =!= undefined", ["DaskstepRun", "DaskstepController"]
        )
        return abandoned({row[0]: row[1] for row in rows if len(row) > 1}, everything)
