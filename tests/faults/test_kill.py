"""Stages killed with SIGKILL (no cleanup runs, as under the OOM killer or a power loss) leave no
output that Snakemake or DVC take as complete, and rerunning finishes the work with the same bytes
as an uninterrupted run."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import tool
from tests.faults.conftest import clone, fault_env, kill_when, ok, stage

pytestmark = pytest.mark.faults_interruption

ATTACK = ("attack", "--model", "lenet", "--attack", "deepfool")
OUT_DIR = "results/smoke/attacks/lenet"
OUTS = [f"{OUT_DIR}/deepfool.pt", f"{OUT_DIR}/deepfool.csv", f"{OUT_DIR}/deepfool.timing.json"]


@pytest.fixture(scope="module")
def reference(smoke_project, tmp_path_factory) -> Path:
    """The same attack, run once without interruption."""
    project = clone(smoke_project, tmp_path_factory.mktemp("ref") / "p")
    ok(stage(project, *ATTACK))
    return project


def _same_table(project: Path, reference: Path) -> None:
    rel = f"{OUT_DIR}/deepfool.csv"
    assert (project / rel).read_bytes() == (reference / rel).read_bytes()


def _temporaries(project: Path) -> list[str]:
    folder = project / OUT_DIR
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")) if folder.is_dir() else []


@pytest.mark.parametrize("output", ["deepfool.pt", "deepfool.csv", "deepfool.timing.json"])
def test_killed_while_writing_leaves_no_output(smoke_project, reference, tmp_path, output):
    project = clone(smoke_project, tmp_path / "p")
    out = stage(project, *ATTACK, env=fault_env(kill=f"rename:{output}|--model lenet --attack deepfool"))
    assert out.returncode == -9
    assert not (project / OUT_DIR / output).exists()
    assert len(_temporaries(project)) == 1  # the complete-looking bytes sit under a temporary name only
    assert not (project / "mlflow.db").exists() or "FINISHED" not in _statuses(project)
    ok(stage(project, *ATTACK))
    assert all((project / rel).exists() for rel in OUTS)
    assert _temporaries(project) == []  # the killed writer's leftover was removed
    _same_table(project, reference)


def _snakemake(project: Path, *args: str) -> list[str]:
    return [tool("snakemake"), "--cores", "1", *args, f"{OUT_DIR}/deepfool.csv"]


def test_snakemake_job_killed_then_rerun(smoke_project, reference, tmp_path):
    project = clone(smoke_project, tmp_path / "p")
    dry = ok(subprocess.run(_snakemake(project, "-n"), cwd=project, capture_output=True, text=True,
                            env=fault_env()))
    assert "attack" in dry.stdout and "train " not in dry.stdout  # only the attack job is due
    proc = subprocess.Popen(_snakemake(project), cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=fault_env())
    # kill the job alone (Snakemake lives on): as the OOM killer would pick the big process
    kill_when(proc, "pipeline.attack", whole_group=False)
    assert proc.returncode != 0
    assert not any((project / rel).exists() for rel in OUTS)
    again = ok(subprocess.run(_snakemake(project, "-n"), cwd=project, capture_output=True, text=True,
                              env=fault_env()))
    assert "attack" in again.stdout
    ok(subprocess.run(_snakemake(project), cwd=project, capture_output=True, text=True, env=fault_env()))
    _same_table(project, reference)


def test_snakemake_killed_with_its_job_then_rerun(smoke_project, reference, tmp_path):
    project = clone(smoke_project, tmp_path / "p")
    proc = subprocess.Popen(_snakemake(project), cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=fault_env(), start_new_session=True)
    # the whole process group at once: a power loss, or `kill -9` of the session
    kill_when(proc, "pipeline.attack")
    assert not any((project / rel).exists() for rel in OUTS)
    # Snakemake's directory lock outlives a SIGKILL; it asks for --unlock (README, "Interruptions")
    locked = subprocess.run(_snakemake(project), cwd=project, capture_output=True, text=True, env=fault_env())
    assert locked.returncode != 0 and "--unlock" in locked.stderr
    ok(subprocess.run(_snakemake(project, "--unlock"), cwd=project, capture_output=True, text=True, env=fault_env()))
    out = ok(subprocess.run(_snakemake(project), cwd=project, capture_output=True, text=True, env=fault_env()))
    assert "IncompleteFilesException" not in out.stderr
    _same_table(project, reference)


def test_dvc_repro_killed_then_rerun(smoke_project, reference, tmp_path):
    project = clone(smoke_project, tmp_path / "p")
    name = "attack@lenet-deepfool"
    cmd = [tool("dvc"), "repro", "--single-item", name]
    proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=fault_env(), start_new_session=True)
    kill_when(proc, "pipeline.attack")
    assert not any((project / rel).exists() for rel in OUTS)
    status = subprocess.run([tool("dvc"), "status", name], cwd=project, capture_output=True, text=True,
                            env=fault_env())
    assert name in status.stdout  # DVC knows the stage is not done
    ok(subprocess.run(cmd, cwd=project, capture_output=True, text=True, env=fault_env()))
    _same_table(project, reference)
    status = ok(subprocess.run([tool("dvc"), "status", name], cwd=project, capture_output=True, text=True,
                               env=fault_env()))
    assert "changed outs" not in status.stdout and "deleted" not in status.stdout


def _statuses(project: Path) -> str:
    import sqlite3

    with sqlite3.connect(project / "mlflow.db") as db:
        return " ".join(row[0] for row in db.execute("select status from runs"))


def test_train_killed_while_writing_its_checkpoint(smoke_project, tmp_path):
    project = clone(smoke_project, tmp_path / "p")
    model = project / "models/smoke/lenet.pt"
    reference = model.read_bytes()
    model.unlink()
    out = stage(project, "train", "--model", "lenet",
                env=fault_env(kill="rename:lenet.pt|--model lenet"))
    assert out.returncode == -9
    assert not model.exists()
    leftovers = [p.name for p in model.parent.iterdir() if p.name.startswith(".lenet.pt.")]
    assert len(leftovers) == 1  # the complete checkpoint, under its temporary name only
    ok(stage(project, "train", "--model", "lenet"))
    assert model.read_bytes() == reference
    assert not [p for p in model.parent.iterdir() if p.name.startswith(".lenet.pt.")]
