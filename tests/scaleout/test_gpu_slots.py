"""Several GPUs on one box, tested on the CPU by faking the count (ADVLAB_GPUS): Snakemake starts no
more GPU jobs than there are cards, and each running job holds its own card."""
from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from pipeline import devices
from tests.conftest import python, run_ok, stage_env, tool

ATTACK_TABLES = [f"results/smoke/attacks/{m}/{a}.csv"
                 for m in ("lenet", "fc100_100") for a in ("fgsm", "pgd", "deepfool")]


def _intervals(log_path):
    events = [json.loads(line) for line in log_path.read_text().splitlines()]
    claims = {e["pid"]: e for e in events if e["event"] == "claim"}
    releases = {e["pid"]: e for e in events if e["event"] == "release"}
    assert set(claims) == set(releases), "every claim is released at exit"
    return [(claims[p]["t"], releases[p]["t"], claims[p]["devices"], claims[p]["stage"]) for p in claims]


def _max_overlap(intervals):
    points = sorted([(a, 1) for a, *_ in intervals] + [(b, -1) for _, b, *_ in intervals], key=lambda p: (p[0], p[1]))
    level = best = 0
    for _, step in points:
        level += step
        best = max(best, level)
    return best


def test_snakemake_runs_one_job_per_card(snake_run, tmp_path, gpus=2):
    """Six single-thread attack jobs, `--cores 6`: the cores would allow six at once; with `gpus`
    faked cards Snakemake runs at most `gpus`, and jobs running together hold different cards."""
    project = tmp_path / "box"
    shutil.copytree(snake_run[0], project, symlinks=True)
    log = tmp_path / "claims.jsonl"
    env = stage_env(ADVLAB_GPUS=str(gpus), ADVLAB_GPU_LOCKS=str(tmp_path / "locks"), ADVLAB_GPU_LOG=str(log))
    # targets first: --forcerun takes every word after it as a rule or file to force
    run_ok([tool("snakemake"), *ATTACK_TABLES, "--cores", "6", "--configfile", "presets/smoke.yaml",
            "--forcerun", "attack"], project, env=env, timeout=900)
    intervals = _intervals(log)
    assert len(intervals) == len(ATTACK_TABLES) and {s for *_, s in intervals} == {"attack"}
    assert 2 <= _max_overlap(intervals) <= gpus  # parallel, but never more jobs than cards
    for i, (a0, a1, da, _) in enumerate(intervals):
        assert len(da) == 1 and int(da[0]) < gpus
        for b0, b1, db, _ in intervals[i + 1:]:
            if a0 < b1 and b0 < a1:
                assert da != db, "two jobs ran on one card at the same time"


def test_visible_gpus(monkeypatch):
    monkeypatch.delenv("ADVLAB_GPUS", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert devices.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("ADVLAB_GPUS", "1")
    assert devices.visible_gpus() == ["2"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("ADVLAB_GPUS", "4")
    assert devices.visible_gpus() == ["0", "1", "2", "3"]  # stand-ins: no card at all
    monkeypatch.setenv("ADVLAB_GPUS", "two")
    with pytest.raises(ValueError, match="ADVLAB_GPUS"):
        devices.visible_gpus()


_CLAIM = """
import os, sys, time
from pipeline import devices
got = devices.claim(int(sys.argv[1]), stage="t", timeout_s=float(sys.argv[2]))
print(",".join(got), os.environ.get("CUDA_VISIBLE_DEVICES"), flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_claims_exclude_each_other_and_die_with_their_process(tmp_path):
    env = stage_env(ADVLAB_GPUS="2", ADVLAB_GPU_LOCKS=str(tmp_path), CUDA_VISIBLE_DEVICES="")
    env.pop("CUDA_VISIBLE_DEVICES")
    env.pop("SLURM_JOB_ID", None)
    cmd = [python(), "-c", _CLAIM]
    holder = subprocess.Popen([*cmd, "2", "5", "60"], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().split() == ["0,1", "0,1"]  # both cards, and only they are visible
        late = subprocess.run([*cmd, "1", "1", "0"], env=env, capture_output=True, text=True, timeout=60)
        assert late.returncode != 0 and "no 1 free GPU(s) among 0,1" in late.stderr
    finally:
        holder.kill()  # SIGKILL: the kernel drops its locks
        holder.wait()
    again = subprocess.run([*cmd, "1", "5", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and again.stdout.split() == ["0", "0"]
    too_many = subprocess.run([*cmd, "3", "5", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert too_many.returncode != 0 and "needs 3 GPUs but 2 are visible" in too_many.stderr


def test_no_card_no_claim(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.delenv("ADVLAB_GPUS", raising=False)
    assert devices.claim(1) == []
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
