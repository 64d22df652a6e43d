"""Artifacts shared through a DVC remote: `python -m pipeline.remote` configures it in one command,
`dvc push` fills it, and a fresh clone + `dvc pull` gets every output back, so that neither `dvc repro`
nor Snakemake (after `snakemake --touch`, README "Scaling out") recomputes anything.

Remotes: a local folder (the default) and S3, against moto's S3 server on 127.0.0.1."""
from __future__ import annotations

import subprocess

import pytest

from tests.conftest import ROOT, python, run_ok, stage_env, tool

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
# DVC-cached outputs to compare after a pull (metrics and plots are in git: cache: false)
PULLED = ["data/prepared/smoke/tensors.pt", "models/smoke/lenet.pt", "models/smoke/fc100_100-madry.pt",
          "results/smoke/attacks/lenet/deepfool.pt", "reports/report.md"]


@pytest.fixture(scope="module")
def committed(dvc_run):
    """The DVC run's project with its results committed, as a user would before sharing them."""
    project = dvc_run[0]
    env = stage_env(**GIT_ENV)
    run_ok(["git", "add", "-A"], project, env=env)
    run_ok(["git", "commit", "-q", "-m", "smoke results"], project, env=env)
    return project


def _share(project, url, *extra, env=None):
    out = run_ok([python(), "-m", "pipeline.remote", url, *extra], project, env=env)
    assert "DVC remote 'store'" in out.stdout
    env_git = stage_env(**GIT_ENV)
    run_ok(["git", "commit", "-q", "-m", "remote", ".dvc/config"], project, env=env_git)
    return run_ok([tool("dvc"), "push"], project, env=env)


def _clone_and_pull(project, dest, env=None):
    run_ok(["git", "clone", "-q", str(project), str(dest)], dest.parent)
    pulled = run_ok([tool("dvc"), "pull"], dest, env=env)
    for rel in PULLED:
        assert (dest / rel).read_bytes() == (project / rel).read_bytes(), rel
    repro = run_ok([tool("dvc"), "repro"], dest, env=env)
    assert "Data and pipelines are up to date" in repro.stdout, repro.stdout[-3000:]
    assert not (dest / "mlflow.db").exists()  # nothing ran: no stage recorded a run
    return pulled


def test_local_folder_remote_round_trip(committed, tmp_path):
    store = tmp_path / "store"
    pushed = _share(committed, str(store))
    assert "pushed" in pushed.stdout and any((store / "files" / "md5").rglob("*"))
    clone = tmp_path / "clone"
    _clone_and_pull(committed, clone)
    # Snakemake after a pull: the pulled files' times say nothing about their order, so Snakemake
    # would redo jobs; --touch marks the existing outputs up to date (README), then nothing is to do.
    run_ok([tool("snakemake"), "--cores", "1", "--touch"], clone)
    dry = run_ok([tool("snakemake"), "--cores", "1", "-n"], clone)
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-3000:]


def test_s3_remote_round_trip(committed, tmp_path):
    from tests.scaleout.servers import MotoServer

    pytest.importorskip("dvc_s3", reason="dvc-s3 is a dev dependency (pip install -e '.[dev]')")
    with MotoServer(tmp_path / "moto", tool("moto_server")) as s3:
        s3.make_bucket("advlab-store")
        creds = stage_env(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1")
        _share(committed, "s3://advlab-store/smoke", "--endpoint-url", s3.url, env=creds)
        keys = s3.objects("advlab-store")
        assert keys and all(k.startswith("smoke/files/md5/") for k in keys)
        config = (committed / ".dvc" / "config").read_text()
        assert "s3://advlab-store/smoke" in config and "testing" not in config  # no credentials in git
        clone = tmp_path / "clone"
        run_ok(["git", "clone", "-q", str(committed), str(clone)], tmp_path)
        # a clone without credentials is told so (config.local is not cloned)
        bare = subprocess.run([tool("dvc"), "pull"], cwd=clone, capture_output=True, text=True,
                              env=stage_env(AWS_ACCESS_KEY_ID="", AWS_SECRET_ACCESS_KEY="",
                                            AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none")))
        assert bare.returncode != 0
        subprocess.run(["rm", "-rf", str(clone)], check=True)
        _clone_and_pull(committed, clone, env=creds)


def test_remote_command_refuses_bad_urls(tmp_path):
    # both are refused before DVC is called: the project's own .dvc/config is not touched
    out = subprocess.run([python(), "-m", "pipeline.remote", "s3://"], capture_output=True, text=True,
                         env=stage_env(), cwd=ROOT)
    assert out.returncode == 2 and "needs a bucket" in out.stderr
    out = subprocess.run([python(), "-m", "pipeline.remote", str(tmp_path / "x"), "--endpoint-url", "http://h"],
                         capture_output=True, text=True, env=stage_env(), cwd=ROOT)
    assert out.returncode == 2 and "s3:// remotes only" in out.stderr
