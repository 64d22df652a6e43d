"""Attack stages stream the test set in batches of eval.batch_size: one attack over 10,000 MNIST points
runs under a 2 GB cap on the process's data memory (RLIMIT_DATA: heap and anonymous mappings, where
every tensor lives), and its peak resident memory stays below 2 GB."""
from __future__ import annotations

import os
import resource
import subprocess

import pytest
import yaml

from tests.conftest import SHARED, project_copy, tool
from tests.faults.conftest import fault_env, ok, stage

CAP = 2 << 30  # bytes
RAW = SHARED / "data" / "MNIST"


def _capped():
    resource.setrlimit(resource.RLIMIT_DATA, (CAP, CAP))


def test_attack_over_10000_mnist_points_under_2gb(tmp_path):
    if not (RAW / "raw").is_dir():
        pytest.skip(f"{RAW}/raw (the full torchvision MNIST) not present: it exists only in the development workplace")
    project = project_copy(tmp_path / "p", preset="smoke")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(dataset="mnist", root=str(SHARED / "data"), download=False, n_train=1000, n_test=10000)
    params["eval"].update(n_points=10000, batch_size=500)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    ok(stage(project, "prepare_data"))
    ok(stage(project, "train", "--model", "fc100_100"))
    cmd = [tool("python"), "-m", "pipeline.attack", "--model", "fc100_100", "--attack", "pgd"]
    proc = subprocess.Popen(cmd, cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=fault_env(), preexec_fn=_capped)
    _, status, rusage = os.wait4(proc.pid, 0)  # the child's own peak, not the test process's
    err = proc.stderr.read()
    assert os.waitstatus_to_exitcode(status) == 0, err[-3000:]
    peak = rusage.ru_maxrss * 1024
    assert peak < CAP, f"peak resident memory {peak / 2**30:.2f} GiB"
    table = (project / "results/smoke/attacks/fc100_100/pgd.csv").read_text().splitlines()
    assert len(table) == 10001
    print(f"pgd over 10,000 MNIST points: peak RSS {peak / 2**20:.0f} MiB under a {CAP >> 20} MiB data cap")
