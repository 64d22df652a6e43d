"""MLflow tracking: one run per stage execution; parallel writers never lose a run."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, stage_env

_LOG_ONE = r"""
import sys

import pytest
from pipeline.config import load_params
from pipeline.tracking import log_stage_run
params = load_params()
log_stage_run("attack", params_all=params, params={"attack": {"eps": 0.1}, "i": sys.argv[1]},
              metrics={"success_rate": 0.5}, curves={"val_acc": [0.1, 0.2, 0.3]},
              tags={"advlab.model": "m" + sys.argv[1]})
"""


@pytest.mark.faults_concurrency
def test_parallel_stages_all_record_their_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = stage_env(MLFLOW_TRACKING_URI=uri)
    procs = [subprocess.Popen([sys.executable, "-c", _LOG_ONE, str(i)], cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()[-2000:]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("advlab")
    runs = client.search_runs([exp.experiment_id], max_results=100)
    assert len(runs) == 8
    assert {r.info.status for r in runs} == {"FINISHED"}
    run = runs[0]
    assert run.data.params["attack.eps"] == "0.1"
    assert run.data.tags["advlab.stage"] == "attack"
    assert run.data.tags["advlab.preset"] == "mnist5k"
    assert "mlflow.source.git.commit" in run.data.tags
    history = client.get_metric_history(run.info.run_id, "val_acc")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == [0.1, 0.2, 0.3]
