"""Several processes for one fit: `train.devices` / `train.strategy` (DDP) through the real train
stage, on the CPU (gloo); and the batch sharding that makes it follow the one-process fit."""
from __future__ import annotations

import json
import shutil

import torch

from advlab.training.datamodule import ArrayDataModule, _loader
from tests.conftest import python, run_ok, stage_env


def _params(project, **train) -> str:
    from pipeline.config import deep_merge, read_yaml

    params = deep_merge(read_yaml(project / "params.yaml"), read_yaml(project / "presets" / "smoke.yaml"))
    params["train"].update(train)
    path = project / "ddp-params.json"
    path.write_text(json.dumps(params))
    return str(path)


def test_two_cpu_processes_train_like_one(snake_run, tmp_path):
    """The train stage with devices=2, strategy=ddp: two ranks really ran (world size recorded by
    Lightning), rank 1 wrote nothing, and the model lands in the one-process fit's accuracy band."""
    project = tmp_path / "ddp"
    shutil.copytree(snake_run[0], project, symlinks=True)
    single = json.loads((project / "metrics/smoke/train/lenet.json").read_text())
    (project / "metrics/smoke/train/lenet.json").unlink()
    env = stage_env(ADVLAB_PARAMS=_params(project, devices=2, strategy="ddp"), OMP_NUM_THREADS="2")
    out = run_ok([python(), "-m", "pipeline.train", "--model", "lenet"], project, env=env, timeout=600)
    ddp = json.loads((project / "metrics/smoke/train/lenet.json").read_text())
    assert single["world_size"] == 1 and ddp["world_size"] == 2
    assert abs(ddp["test_accuracy"] - single["test_accuracy"]) <= 0.05, (ddp, single)
    assert abs(ddp["best_val_accuracy"] - single["best_val_accuracy"]) <= 0.05, (ddp, single)
    assert out.stderr.count("train: done in") == 1  # rank 1 left after the fit: one stage end, one record
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("advlab").experiment_id])
    assert len(runs) == 1 and runs[0].data.params["train.devices"] == "2"


def test_bad_devices_is_refused_before_work(snake_run, tmp_path):
    project = tmp_path / "bad"
    shutil.copytree(snake_run[0], project, symlinks=True)
    env = stage_env(ADVLAB_PARAMS=_params(project, devices=0))
    import subprocess

    out = subprocess.run([python(), "-m", "pipeline.train", "--model", "lenet"], cwd=project, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "train.devices" in out.stderr and "minimum" in out.stderr


def test_rank_shares_make_up_the_one_process_batches():
    """Each global batch is the single process's batch, split item-wise over the ranks; a last batch
    smaller than the world is left out by every rank."""
    x, y = torch.arange(103).float().reshape(-1, 1), torch.arange(103)
    one = [b[1].tolist() for b in _loader((x, y), 10, shuffle=True, seed=3)]
    for world in (2, 3):
        shares = [[b[1].tolist() for b in _loader((x, y), 10, shuffle=True, seed=3, rank=r, world=world)]
                  for r in range(world)]
        assert len({len(s) for s in shares}) == 1  # every rank takes as many steps
        kept = [batch for batch in one if len(batch) >= world]
        assert len(shares[0]) == len(kept) == len(_loader((x, y), 10, True, 3, rank=0, world=world))
        for i, batch in enumerate(kept):
            assert sorted(sum((s[i] for s in shares), [])) == sorted(batch)
    small = [b[1].tolist() for b in _loader((x[:21], y[:21]), 10, True, 0, rank=1, world=2)]
    assert len(small) == 2  # the last batch (1 item) cannot be split over 2 ranks


def test_datamodule_without_trainer_is_one_process():
    dm = ArrayDataModule(torch.rand(40, 1, 4, 4), torch.arange(40) % 4, batch_size=8, seed=0)
    assert sum(len(b[1]) for b in dm.train_dataloader()) == dm.n_train
