"""The pipeline on a real SLURM cluster (Debian's slurm-wlm, one node: this machine, 127.0.0.1 only),
through Snakemake's SLURM executor and the project's profile, profiles/slurm.

The cluster declares 2 GPUs backed by stand-in device files (tests/scaleout/slurm_cluster.py): SLURM
schedules the profile's `--gpus=1` requests against them and gives each job its own index in
CUDA_VISIBLE_DEVICES, while the jobs compute on the CPU.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import project_copy, run_ok, stage_env, tool
from tests.scaleout import slurm_cluster
from tests.test_pipeline_e2e import SMOKE_JOBS, _runs, _sqlite

# Accounting is off on the test cluster, so squeue answers status queries (sacct cannot).
SLURM_ARGS = ["--workflow-profile", "profiles/slurm", "--slurm-status-command", "squeue",
              "--slurm-init-seconds-before-status-checks", "5"]
# The node has 2 CPUs: the torch rules ask for 2 (as `--cores all` does locally, so that the float
# results agree bit for bit), the light ones for 1.
CORES = ["--cores", "2"]
GPU_RULES = {"train", "train_defense", "train_copy", "train_thermometer", "train_transfer", "attack", "evaluate",
             "kurakin", "obfuscated", "substitute", "cw_study", "onepixel_study", "jsma_study", "physical",
             "madry_table", "deepfool_study", "transfer", "units", "uap", "uap_study", "train_pixelcnn", "train_gan",
             "generative_defenses"}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    missing = slurm_cluster.missing_programs()
    if missing:
        pytest.skip(f"SLURM is not installed here ({', '.join(missing)}); .ci/run installs Debian's "
                    "slurm-wlm and munge")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's daemons and stand-in GPU device files need root")
    if slurm_cluster.SYSTEM_CONF.exists() and slurm_cluster.MARKER not in \
            slurm_cluster.SYSTEM_CONF.read_text().splitlines()[0]:
        pytest.skip(f"{slurm_cluster.SYSTEM_CONF} belongs to a real cluster: not replaced by a test")
    root = tmp_path_factory.mktemp("slurm")
    slurm_cluster.start(root, gpus=2)
    try:
        yield root
    finally:
        slurm_cluster.stop(root)


def _mlflow_runs(project: Path):
    return _runs(_sqlite(project))[1]


@pytest.fixture(scope="module")
def slurm_run(slurm, tmp_path_factory):
    project = project_copy(tmp_path_factory.mktemp("slurm-run") / "project")
    out = run_ok([tool("snakemake"), *SLURM_ARGS, *CORES, "--configfile", "presets/smoke.yaml"], project,
                 timeout=2400)
    return project, out


def test_every_job_goes_through_sbatch(slurm_run):
    project, out = slurm_run
    log = out.stdout + out.stderr
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) == SMOKE_JOBS and len(set(submitted)) == SMOKE_JOBS
    runs = _mlflow_runs(project)
    assert len(runs) == SMOKE_JOBS and {r.info.status for r in runs} == {"FINISHED"}
    # each stage recorded from inside its own SLURM job ...
    jobs = [r.data.tags.get("advlab.slurm_job") for r in runs]
    assert None not in jobs and sorted(jobs) == sorted(submitted)
    # ... and the GPU rules got a card each from SLURM (the profile's gpu: 1), the others none
    for run in runs:
        stage = run.data.tags["advlab.stage"]
        assert (run.data.tags.get("advlab.gpus") in {"0", "1"}) == (stage in GPU_RULES), (stage, run.data.tags)
    assert (project / "reports" / "report.md").exists()


def test_outputs_equal_a_local_run(slurm_run, snake_run):
    """Same params, same seeds, same thread counts: every metrics JSON bit for bit (timing.json holds
    wall times by design), and the prepared data and adversarial examples byte for byte."""
    slurm, local = slurm_run[0], snake_run[0]
    found = sorted(str(p.relative_to(local)) for p in (local / "metrics").rglob("*.json"))
    assert len(found) >= 20
    assert sorted(str(p.relative_to(slurm)) for p in (slurm / "metrics").rglob("*.json")) == found
    differ = [rel for rel in found if rel != "metrics/smoke/timing.json"
              and (slurm / rel).read_bytes() != (local / rel).read_bytes()]
    assert differ == []
    for rel in ["data/prepared/smoke/tensors.pt", "results/smoke/attacks/lenet/deepfool.pt",
                "results/smoke/attacks/fc100_100-madry/pgd.csv"]:
        assert (slurm / rel).read_bytes() == (local / rel).read_bytes(), rel


def test_ddp_inside_a_slurm_job_runs_two_processes(slurm, snake_run, tmp_path):
    """`train.devices: 2` in a job of the SLURM executor (a one-task step): Lightning must start the
    second rank itself rather than train alone as SLURM's one task (scale-out notes, P4)."""
    project = tmp_path / "ddp"
    shutil.copytree(snake_run[0], project, symlinks=True)
    (project / "mlflow.db").unlink(missing_ok=True)
    target = "models/smoke/lenet.pt"
    # the target first: --forcerun takes every word after it as a rule or file to force
    out = run_ok([tool("snakemake"), target, *SLURM_ARGS, *CORES, "--configfile", "presets/smoke.yaml",
                  "presets/overlays/ddp2.yaml", "--forcerun", "train"], project, timeout=900)
    assert len(re.findall(r"has been submitted with SLURM jobid", out.stdout + out.stderr)) == 1
    ddp = json.loads((project / "metrics/smoke/train/lenet.json").read_text())
    single = json.loads((snake_run[0] / "metrics/smoke/train/lenet.json").read_text())
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    # the same global batches, split over two ranks: the same accuracy band as one process
    assert abs(ddp["test_accuracy"] - single["test_accuracy"]) <= 0.05, (ddp, single)
    (run,) = [r for r in _mlflow_runs(project) if r.data.tags["advlab.stage"] == "train"]
    assert run.data.tags.get("advlab.slurm_job") and run.data.params["train.devices"] == "2"


def test_cluster_listens_on_loopback_only(slurm):
    """slurmctld and slurmd listen on 127.0.0.1 only (CommunicationParameters), read from the kernel's
    socket table: /proc/net/tcp and tcp6, listening state 0A."""
    conf = slurm_cluster.SYSTEM_CONF.read_text()
    ports = {int(p) for p in re.findall(r"^Slurm(?:ctld|d)Port=(\d+)$", conf, flags=re.M)}
    assert len(ports) == 2
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port = local.split(":")
            if state == "0A" and int(port, 16) in ports:
                listening.append(address)
    assert len(listening) >= 2 and set(listening) == {"0100007F"}, listening  # 127.0.0.1, little-endian


def test_profile_requests_what_each_rule_needs():
    """Every rule of the workflow has its cluster resources in the profile (memory, runtime; GPU for
    the torch rules), and the dry run turns them into sbatch requests."""
    import yaml

    profile = yaml.safe_load((Path(__file__).parents[2] / "profiles/slurm/config.yaml").read_text())
    rules = set(profile["set-resources"])
    text = "".join((Path(__file__).parents[2] / "pipeline/rules" / f).read_text()
                   for f in os.listdir(Path(__file__).parents[2] / "pipeline/rules"))
    declared = set(re.findall(r"^rule (\w+):", text, flags=re.M))
    assert declared == rules
    for rule, res in profile["set-resources"].items():
        assert res["mem_mb"] > 0 and res["runtime"] > 0
        assert (res.get("gpu") == 1) == (rule in GPU_RULES), rule
    assert profile["executor"] == "slurm"
    # the Snakefile's GPU cap (the submitting machine's cards) must not serialise the cluster's GPU jobs
    assert profile["resources"]["gpu"] >= profile["jobs"]


def test_without_slurm_status_answers_snakemake_would_wait(slurm, tmp_path):
    """The trap this profile documents: with accounting off, the executor's default `sacct` fails."""
    import subprocess

    out = subprocess.run(["sacct", "-X", "-n"], capture_output=True, text=True, env=stage_env(), timeout=30)
    assert out.returncode != 0 and "accounting storage is disabled" in (out.stdout + out.stderr).lower()
