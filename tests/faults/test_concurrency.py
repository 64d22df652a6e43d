"""Parallel stages against one default MLflow store (the project's SQLite file): every run is
recorded, and a stage killed while recording leaves a FAILED run, never one stuck in RUNNING."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, stage_env, tool
from tests.faults.conftest import clone, fault_env, ok

pytestmark = pytest.mark.faults_concurrency

JOBS = [(m, a) for m in ("lenet", "fc100_100") for a in ("fgsm", "pgd", "deepfool", "bim")]
KILLED = ("lenet", "pgd")


def _runs(project: Path) -> list[tuple[str, str, str]]:
    """(status, model, attack) of every attack run in the project's store."""
    with sqlite3.connect(project / "mlflow.db") as db:
        rows = db.execute(
            "select r.status, m.value, a.value from runs r "
            "join tags s on s.run_uuid = r.run_uuid and s.key = 'advlab.stage' and s.value = 'attack' "
            "join tags m on m.run_uuid = r.run_uuid and m.key = 'advlab.model' "
            "join tags a on a.run_uuid = r.run_uuid and a.key = 'advlab.attack'").fetchall()
    return sorted(rows)


def test_eight_parallel_stages_one_killed_while_recording(smoke_project, tmp_path):
    project = clone(smoke_project, tmp_path / "p")
    targets = [f"results/smoke/attacks/{m}/{a}.csv" for m, a in JOBS]
    kill = f"record|--model {KILLED[0]} --attack {KILLED[1]}"
    out = subprocess.run([tool("snakemake"), "--cores", "8", "--keep-going", *targets], cwd=project,
                         capture_output=True, text=True, env=fault_env(kill=kill), timeout=600)
    assert out.returncode != 0  # the killed job failed the workflow
    # marked FAILED by a writer that came after it, or else by Snakemake's onerror handler
    runs = _runs(project)
    assert len(runs) == 8
    assert [r for r in runs if r[0] != "FINISHED"] == [("FAILED", *KILLED)]
    assert not any(r[0] == "RUNNING" for r in runs)
    # Snakemake removed the killed job's outputs; the others' stand
    done = [t for t in targets if (project / t).exists()]
    assert len(done) == 7 and f"results/smoke/attacks/{KILLED[0]}/{KILLED[1]}.csv" not in done
    # rerunning redoes the killed job only
    again = ok(subprocess.run([tool("snakemake"), "--cores", "8", *targets], cwd=project, capture_output=True,
                              text=True, env=fault_env(), timeout=600))
    assert len(re.findall(r"^(local)?rule attack:", again.stdout + again.stderr, re.M)) == 1
    runs = _runs(project)
    assert len(runs) == 9 and sum(r[0] == "FINISHED" for r in runs) == 8


_RECORD = r"""
import sys
from pipeline.config import load_params
from pipeline.tracking import log_stage_run
log_stage_run("attack", params_all=load_params(), params={"i": sys.argv[1]}, metrics={"success_rate": 0.5},
              tags={"advlab.model": "m" + sys.argv[1], "advlab.attack": "fgsm"})
"""


def test_run_left_running_is_failed_by_the_next_writer_or_on_request(tmp_path):
    db = tmp_path / "mlflow.db"
    env = stage_env(MLFLOW_TRACKING_URI=f"sqlite:///{db}")
    killed = subprocess.run([sys.executable, "-c", _RECORD, "0"], cwd=ROOT, capture_output=True, text=True,
                            env={**fault_env(kill="record|-c"), "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]})
    assert killed.returncode == -9
    with sqlite3.connect(db) as con:
        assert [r[0] for r in con.execute("select status from runs")] == ["RUNNING"]
    ok(subprocess.run([sys.executable, "-m", "pipeline.tracking", "--fail-abandoned"], cwd=ROOT, capture_output=True,
                      text=True, env=env))
    with sqlite3.connect(db) as con:
        assert [r[0] for r in con.execute("select status from runs")] == ["FAILED"]
    # and without being asked: the next stage to record cleans up before writing its own run
    subprocess.run([sys.executable, "-c", _RECORD, "1"], cwd=ROOT, capture_output=True, text=True,
                   env={**fault_env(kill="record|-c"), "MLFLOW_TRACKING_URI": env["MLFLOW_TRACKING_URI"]})
    ok(subprocess.run([sys.executable, "-c", _RECORD, "2"], cwd=ROOT, capture_output=True, text=True, env=env))
    with sqlite3.connect(db) as con:
        assert sorted(r[0] for r in con.execute("select status from runs")) == ["FAILED", "FAILED", "FINISHED"]
