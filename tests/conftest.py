"""Shared test helpers: the repo root, ../shared, and a scratch copy of the project."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# Folders a scratch copy never needs: environments, caches and outputs of earlier runs.
_SKIP = {".venv", ".git", ".snakemake", "__pycache__", ".pytest_cache", ".dvc/cache", ".dvc/tmp"}
_SKIP_TOP = {"models", "results", "metrics", "reports", "mlartifacts", "mlruns", "bench", "dvc.lock"}


def _ignore(directory, names):
    skip = {n for n in names if n in _SKIP or n.endswith(".egg-info") or n.startswith("mlflow.db")}
    if Path(directory) == ROOT:
        skip |= {n for n in names if n in _SKIP_TOP}
    if Path(directory) == ROOT / ".dvc":
        skip |= {n for n in names if n in ("cache", "tmp")}
    if Path(directory) == ROOT / "data":
        skip |= {n for n in names if n in ("prepared", "raw")}
    return skip


def project_copy(dest: Path, preset: str | None = None) -> Path:
    """A fresh git + DVC checkout of the working tree at `dest` (optionally with a preset applied)."""
    shutil.copytree(ROOT, dest, ignore=_ignore)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    if preset:
        subprocess.run([python(), "-m", "pipeline.preset", preset], cwd=dest, check=True, capture_output=True)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "commit", "-q", "-m", "scratch"], cwd=dest, check=True, env=env)
    return dest


def python() -> str:
    import sys

    return sys.executable


def tool(name: str) -> str:
    """A console script of this environment (snakemake, dvc, mlflow)."""
    import sys

    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} is not installed in this environment")
    return found


def stage_env(**extra) -> dict:
    """Environment for running stages in a scratch copy: this Python first on PATH."""
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("ADVLAB_PARAMS", "MLFLOW_TRACKING_URI")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def run_ok(cmd, cwd, timeout=900, env=None):
    """Run a command; fail the test with its output's tail unless it exits 0."""
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env or stage_env(), timeout=timeout)
    assert out.returncode == 0, f"{' '.join(map(str, cmd))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}"
    return out


# -- the smoke preset's whole DAG, run once per session and shared by the tests that read it ---------

@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` (SQLite backend, local artifact root) on 127.0.0.1; its tracking URI."""
    from tests.scaleout.servers import MlflowServer

    with MlflowServer(tmp_path_factory.mktemp("mlflow-server"), tool("mlflow")) as server:
        yield server.url


@pytest.fixture(scope="session")
def snake_run(tmp_path_factory, mlflow_server):
    """`snakemake --cores all` on the smoke preset in a scratch project, run twice (the second must do
    nothing), logging to the MLflow server: (project, first, second)."""
    project = project_copy(tmp_path_factory.mktemp("e2e") / "snake")
    env = stage_env(MLFLOW_TRACKING_URI=mlflow_server)
    cmd = [tool("snakemake"), "--cores", "all", "--configfile", "presets/smoke.yaml"]
    first = run_ok(cmd, project, env=env)
    second = run_ok(cmd, project, env=env)
    return project, first, second


@pytest.fixture(scope="session")
def dvc_run(tmp_path_factory):
    """`dvc repro` of the smoke preset in a scratch git + DVC project, twice, default SQLite store."""
    project = project_copy(tmp_path_factory.mktemp("e2e") / "dvc", preset="smoke")
    first = run_ok([tool("dvc"), "repro"], project)
    second = run_ok([tool("dvc"), "repro"], project)
    return project, first, second


@pytest.fixture(scope="module")
def one_thread():
    """Tiny nets: a second OpenMP thread gains nothing, and when other jobs share the cores its
    spin-waiting can slow a step a hundredfold. Use with `pytestmark = usefixtures("one_thread")`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def small():
    """600 / 200 stratified mnist5k images: enough for a one-epoch fit in about a second."""
    from advlab.data import load_dataset

    return load_dataset("mnist5k", n_train=600, n_test=200, seed=0)


@pytest.fixture
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.exists():
        pytest.skip("../shared/data is not present (it exists only in the development workplace)")
    return path


def pytest_collection_modifyitems(config, items):
    """`gpu` tests need CUDA: skipped, with the reason, where there is none."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# -- the fault-injection suite's tally ------------------------------------------------------------

FAULT_KINDS = {"faults_bad_input": "bad-input", "faults_interruption": "interruption",
               "faults_concurrency": "concurrency"}
_fault_outcomes: dict[str, dict[str, int]] = {}


def pytest_runtest_logreport(report):
    """Count each fault-injection case once, by its outcome (a failed set-up counts as failed)."""
    kinds = [k for k in FAULT_KINDS if k in report.keywords]
    if not kinds or (report.when != "call" and report.passed):
        return
    outcome = "skipped" if report.skipped else ("failed" if report.failed else "passed")
    for kind in kinds:
        tally = _fault_outcomes.setdefault(kind, {"passed": 0, "failed": 0, "skipped": 0})
        tally[outcome] += 1


def pytest_terminal_summary(terminalreporter):
    if not _fault_outcomes:
        return
    terminalreporter.section("fault-injection suite")
    for kind, label in FAULT_KINDS.items():
        tally = _fault_outcomes.get(kind)
        if tally:
            tried = sum(tally.values())
            terminalreporter.write_line(f"{label}: {tried} cases tried, {tally['passed']} ended as specified, "
                                        f"{tally['failed']} failed, {tally['skipped']} skipped")
