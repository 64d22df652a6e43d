"""The fault suite's shared project: a scratch copy on the smoke preset with data and two trained models."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT, project_copy, stage_env, tool

INJECT = ROOT / "tests" / "faults" / "inject"


def fault_env(kill: str | None = None, **extra) -> dict:
    """A stage environment; with `kill` ("<point>|<argv substring>"), the injector arms it."""
    env = stage_env(ADVLAB_THREADS="1", **extra)
    if kill:
        env["ADVLAB_TEST_KILL"] = kill
        env["PYTHONPATH"] = os.pathsep.join([str(INJECT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def stage(project: Path, name: str, *args: str, env: dict | None = None, timeout: int = 300):
    return subprocess.run([tool("python"), "-m", f"pipeline.{name}", *args], cwd=project, capture_output=True,
                          text=True, env=env or fault_env(), timeout=timeout)


def ok(out: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert out.returncode == 0, f"{out.args} failed:\n{out.stdout[-2000:]}\n{out.stderr[-4000:]}"
    return out


def clone(project: Path, dest: Path) -> Path:
    """A copy of a prepared scratch project, its git repo, data and models included."""
    shutil.copytree(project, dest, symlinks=True, ignore=shutil.ignore_patterns("mlflow.db*", ".snakemake"))
    return dest


def files_under(project: Path, *tops: str) -> set[str]:
    return {str(p.relative_to(project)) for top in tops if (project / top).exists()
            for p in (project / top).rglob("*") if p.is_file()}


def job_pid(module: str, under: int) -> int | None:
    """The pid of a `python -m <module>` process descending from pid `under` (found through /proc)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            parents[int(entry.name)] = (int(stat.rsplit(")", 1)[1].split()[1]), cmd)
    for pid, (_, cmd) in parents.items():
        if b"-m" in cmd and module.encode() in cmd:
            ancestor = pid
            while ancestor in parents and ancestor != under:
                ancestor = parents[ancestor][0]
            if ancestor == under:
                return pid
    return None


def kill_when(proc: subprocess.Popen, module: str, whole_group: bool = True, timeout: float = 180) -> None:
    """SIGKILL, once `python -m <module>` runs under `proc` and has imported torch (so it is at
    work, not starting): `proc`'s whole process group, or with whole_group=False that job alone."""
    deadline = time.monotonic() + timeout
    while True:
        pid = job_pid(module, proc.pid)
        if pid is not None and _has_loaded(pid, "libtorch"):
            break
        assert proc.poll() is None, f"finished before the kill:\n{proc.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "the moment to kill never came"
        time.sleep(0.05)
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        os.kill(pid, signal.SIGKILL)
    proc.communicate(timeout=120)


def _has_loaded(pid: int, library: str) -> bool:
    try:
        return library in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.fixture(scope="session")
def smoke_project(tmp_path_factory) -> Path:
    project = project_copy(tmp_path_factory.mktemp("faults") / "base", preset="smoke")
    ok(stage(project, "prepare_data"))
    for model in ("lenet", "fc100_100"):
        ok(stage(project, "train", "--model", model))
    (project / "mlflow.db").unlink()
    return project
