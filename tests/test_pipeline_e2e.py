"""End to end: the whole DAG on the smoke preset through Snakemake and through DVC.

Both runs happen in scratch copies of the project (fresh git + DVC repos); the checks compare
their outputs, rerun both tools to see that nothing is redone, and read the MLflow store.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import project_copy, stage_env, tool

# prepare_data, train x2, train_defense x3, attack x (5 models x 3 attacks), evaluate, report
SMOKE_JOBS = 1 + 2 + 3 + 5 * 3 + 1 + 1


def _run(cmd, cwd, timeout=900):
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=stage_env(), timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


@pytest.fixture(scope="module")
def snake_run(tmp_path_factory):
    project = project_copy(tmp_path_factory.mktemp("e2e") / "snake")
    first = _run([tool("snakemake"), "--cores", "all", "--configfile", "presets/smoke.yaml"], project)
    second = _run([tool("snakemake"), "--cores", "all", "--configfile", "presets/smoke.yaml"], project)
    return project, first, second


@pytest.fixture(scope="module")
def dvc_run(tmp_path_factory):
    project = project_copy(tmp_path_factory.mktemp("e2e") / "dvc", preset="smoke")
    first = _run([tool("dvc"), "repro"], project)
    second = _run([tool("dvc"), "repro"], project)
    return project, first, second


def _runs(project: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name("advlab")
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def test_snakemake_builds_everything_then_nothing(snake_run):
    project, first, second = snake_run
    for rel in ["reports/report.md", "reports/figures/examples_lenet.png", "reports/figures/norms_lenet.png",
                "reports/figures/training_curves.png", "metrics/smoke/robustness.json",
                "metrics/smoke/timing.json", "models/smoke/lenet.pt", "data/prepared/smoke/meta.json",
                "results/smoke/attacks/lenet/deepfool.csv"]:
        assert (project / rel).exists(), rel
    assert "Nothing to be done" in second.stdout + second.stderr


def test_report_has_tables_beside_the_paper(snake_run):
    project, _, _ = snake_run
    text = (project / "reports" / "report.md").read_text()
    assert "# advlab report — preset `smoke`" in text
    assert "## Robustness" in text and "## DeepFool beside the paper" in text and "## Defended models" in text
    assert "fc100_100-madry" in text and "PGD adversarial training" in text
    assert "LeNet (MNIST)" in text and "ρ_adv DeepFool (paper)" in text
    for fig in ["examples_lenet.png", "norms_fc100_100.png", "training_curves.png"]:
        assert f"(figures/{fig})" in text


def test_one_mlflow_run_per_stage_execution(snake_run):
    project, _, _ = snake_run
    client, runs = _runs(project)
    assert len(runs) == SMOKE_JOBS  # the second, up-to-date invocation added none
    assert {r.info.status for r in runs} == {"FINISHED"}
    stages = sorted(r.data.tags["advlab.stage"] for r in runs)
    assert stages.count("attack") == 15 and stages.count("train") == 2 and stages.count("train_defense") == 3
    train = next(r for r in runs if r.data.tags["advlab.stage"] == "train")
    assert train.data.tags["advlab.preset"] == "smoke"
    assert train.data.params["train.epochs"] == "2"
    history = client.get_metric_history(train.info.run_id, "val_acc")
    assert len(history) == 2  # one point per epoch
    report = next(r for r in runs if r.data.tags["advlab.stage"] == "report")
    names = {a.path for a in client.list_artifacts(report.info.run_id)}
    assert {"report.md", "figures"} <= names


def test_dvc_builds_everything_then_nothing(dvc_run):
    project, first, second = dvc_run
    assert (project / "reports" / "report.md").exists()
    assert "Data and pipelines are up to date" in second.stdout
    _, runs = _runs(project)
    assert len(runs) == SMOKE_JOBS
    metrics = subprocess.run([tool("dvc"), "metrics", "show", "--json"], cwd=project, capture_output=True,
                             text=True, env=stage_env())
    assert "robustness.json" in metrics.stdout


def test_snakemake_and_dvc_outputs_agree(snake_run, dvc_run):
    snake, dvc = snake_run[0], dvc_run[0]
    for rel in ["metrics/smoke/robustness.json", "metrics/smoke/train/lenet.json",
                "metrics/smoke/train/fc100_100.json", "data/prepared/smoke/meta.json"]:
        assert json.loads((snake / rel).read_text()) == json.loads((dvc / rel).read_text()), rel
    for rel in ["results/smoke/attacks/lenet/deepfool.csv", "results/smoke/attacks/fc100_100/pgd.csv"]:
        assert (snake / rel).read_bytes() == (dvc / rel).read_bytes(), rel


def test_dvc_adopts_snakemake_outputs_without_rerunning(snake_run):
    project, _, _ = snake_run
    subprocess.run([tool("python"), "-m", "pipeline.preset", "smoke"], cwd=project, check=True, env=stage_env())
    _run([tool("dvc"), "commit", "--force"], project)
    status = _run([tool("dvc"), "status"], project)
    assert "Data and pipelines are up to date" in status.stdout


def test_snakemake_html_report(snake_run):
    project, _, _ = snake_run
    _run([tool("snakemake"), "--configfile", "presets/smoke.yaml", "--report", "reports/report.html"], project)
    assert (project / "reports" / "report.html").stat().st_size > 10_000
