"""dvc.yaml must run what the Snakefile runs: same commands, outs, deps and params keys."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, project_copy


def test_dvc_yaml_is_generated_from_the_stage_table():
    out = subprocess.run([sys.executable, "-m", "pipeline.dvcgen", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def snakemake_jobs(project: Path) -> dict[str, dict]:
    """Every job of the Snakemake DAG for the project's params.yaml, keyed by shell command."""
    code = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (ConfigSettings, DAGSettings, OutputSettings, Quietness,
                                      ResourceSettings, StorageSettings)
with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    wf_api = api.workflow(resource_settings=ResourceSettings(cores=1), config_settings=ConfigSettings(),
                          storage_settings=StorageSettings(), workdir=Path("."), snakefile=Path("Snakefile"))
    dag_api = wf_api.dag(dag_settings=DAGSettings(forceall=True))
    wf = dag_api.workflow_api._workflow
    wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    wf._build_dag()
    jobs = {}
    for job in wf.dag.jobs:
        if job.rule.name == "all":
            continue
        jobs[job.shellcmd.strip()] = {"rule": job.rule.name, "input": sorted(map(str, job.input)),
                                      "output": sorted(map(str, job.output)),
                                      "params": sorted(job.params["values"])}
    print(json.dumps(jobs))
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    return json.loads(out.stdout.strip().splitlines()[-1])


def dvc_stages(project: Path) -> dict[str, dict]:
    from dvc.repo import Repo

    stages = {}
    with Repo(str(project)) as repo:
        for stage in repo.index.stages:
            params = [k for dep in stage.deps if hasattr(dep, "params") for k in dep.params]
            stages[stage.cmd.strip()] = {
                "name": stage.addressing,
                "deps": sorted(str(d.def_path) for d in stage.deps if not hasattr(d, "params")),
                "outs": sorted(str(o.def_path) for o in stage.outs),
                "params": sorted(params),
            }
    return stages


def _covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


@pytest.mark.parametrize("preset", [None, "smoke"])
def test_snakemake_and_dvc_run_the_same_stages(tmp_path, preset):
    project = project_copy(tmp_path / "p", preset=preset)
    snake, dvc = snakemake_jobs(project), dvc_stages(project)
    assert sorted(snake) == sorted(dvc), "the two orchestrators run different commands"
    for cmd, job in snake.items():
        stage = dvc[cmd]
        assert job["output"] == stage["outs"], f"{stage['name']}: outs differ"
        assert job["params"] == stage["params"], f"{stage['name']}: params keys differ"
        missing = [p for p in job["input"] if not _covered(p, stage["deps"])]
        assert not missing, f"{stage['name']}: Snakemake inputs not among DVC deps: {missing}"
        extra = [d for d in stage["deps"] if not any(_covered(p, [d]) for p in job["input"])]
        assert not extra, f"{stage['name']}: DVC deps that Snakemake does not wait for: {extra}"
