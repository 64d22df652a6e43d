"""MLflow as a view over the pipeline: each stage execution becomes one run.

A stage writes its outputs first (those are what Snakemake and DVC track), then hands params,
metrics, per-epoch curves and artifacts to MLflow in one short, serialised transaction. An
exclusive file lock beside a SQLite store means parallel jobs never contend for SQLite's single
writer lock, so none fails or loses its run under `--cores all` (pipeline-practices §6).
"""
from __future__ import annotations

import math
import os
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterable

from pipeline.config import ROOT
from pipeline.io import pid_alive

LOCK_TIMEOUT_S = 600


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{ROOT / 'mlflow.db'}"


def _lock_path(uri: str) -> Path:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).with_suffix(".db.lock")
    # A server store serialises writes itself; a lock per project keeps behaviour uniform.
    return ROOT / ".mlflow.lock"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10)
        commit = out.stdout.strip()
        if not commit:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def flatten(params: dict, prefix: str = "") -> dict[str, str]:
    out = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = str(value)
    return out


def _writer() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _abandoned(run, uri: str) -> bool:
    """A RUNNING run of ours whose writer can no longer finish it.

    Writers hold the store's lock from create_run to set_terminated. For a SQLite store the lock
    file sits beside the database, so every writer on every host shares it, and a RUNNING run seen
    under the lock was left by a killed writer. Other stores' locks are per checkout: there only a
    run whose writer was on this host and is gone is known to be abandoned.
    """
    writer = run.data.tags.get("advlab.writer")
    if writer is None:
        return False
    if uri.startswith("sqlite:///"):
        return True
    host, _, pid = writer.rpartition(":")
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def _fail_abandoned(client, uri: str, experiment_ids: list[str]) -> list[str]:
    """Mark abandoned runs FAILED (call with the lock held); returns their ids."""
    failed = []
    if not experiment_ids:
        return failed
    for run in client.search_runs(experiment_ids, filter_string="attributes.status = 'RUNNING'", max_results=1000):
        if _abandoned(run, uri):
            client.set_tag(run.info.run_id, "advlab.failure", "its stage was killed while recording the run")
            client.set_terminated(run.info.run_id, status="FAILED")
            failed.append(run.info.run_id)
    return failed


def fail_abandoned_runs(uri: str | None = None) -> list[str]:
    """Mark FAILED the runs of stages killed while recording them (Snakemake calls this on error;
    every stage's own recording does it too). Returns the ids marked."""
    uri = uri or tracking_uri()
    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
        return []
    from filelock import FileLock
    from mlflow.tracking import MlflowClient

    with FileLock(str(_lock_path(uri)), timeout=LOCK_TIMEOUT_S):
        client = MlflowClient(tracking_uri=uri)
        return _fail_abandoned(client, uri, [e.experiment_id for e in client.search_experiments()])


def _experiment_id(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    # A local store keeps artifacts beside it, in the project; a tracking server keeps them where it
    # was told to (--artifacts-destination), so that every machine that logs to it shares them.
    local = not uri.startswith(("http://", "https://", "databricks"))
    try:
        return client.create_experiment(name, artifact_location=(ROOT / "mlartifacts").as_uri() if local else None)
    except Exception:  # another host created it in between
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def log_stage_run(
    stage: str,
    *,
    params_all: dict,
    params: dict,
    metrics: dict[str, float] | None = None,
    curves: dict[str, list[float]] | None = None,
    artifacts: Iterable[str | os.PathLike] = (),
    tags: dict[str, str] | None = None,
) -> str:
    """Record one finished stage execution; returns the MLflow run id."""
    from filelock import FileLock
    from mlflow.entities import Metric, Param
    from mlflow.tracking import MlflowClient

    uri = tracking_uri()
    lock_path = _lock_path(uri)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    all_tags = {
        "advlab.stage": stage,
        "advlab.preset": str(params_all.get("preset")),
        "mlflow.source.git.commit": git_commit(),
        "mlflow.source.name": f"pipeline.{stage}",
        "advlab.writer": _writer(),
        **(tags or {}),
    }
    run_name = ":".join([stage] + [str((tags or {})[k]) for k in ("advlab.model", "advlab.attack") if k in (tags or {})])
    now_ms = int(time.time() * 1000)
    metric_rows = [Metric(k, float(v), now_ms, 0) for k, v in (metrics or {}).items()
                   if v is not None and math.isfinite(float(v))]
    for name, values in (curves or {}).items():
        metric_rows += [Metric(name, float(v), now_ms, step) for step, v in enumerate(values)
                        if v is not None and math.isfinite(float(v))]
    param_rows = [Param(k, v[:6000]) for k, v in flatten(params).items()]

    with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
        client = MlflowClient(tracking_uri=uri)
        exp_id = _experiment_id(client, params_all["mlflow"]["experiment"], uri)
        _fail_abandoned(client, uri, [exp_id])
        run = client.create_run(exp_id, run_name=run_name,
                                tags={k: str(v) for k, v in all_tags.items()})
        run_id = run.info.run_id
        try:
            for i in range(0, len(param_rows), 100):
                client.log_batch(run_id, params=param_rows[i:i + 100])
            for i in range(0, len(metric_rows), 1000):
                client.log_batch(run_id, metrics=metric_rows[i:i + 1000])
            for artifact in artifacts:
                artifact = Path(artifact)
                if artifact.is_dir():
                    client.log_artifacts(run_id, str(artifact), artifact_path=artifact.name)
                elif artifact.exists():
                    client.log_artifact(run_id, str(artifact))
        except BaseException:
            client.set_terminated(run_id, status="FAILED")
            raise
        client.set_terminated(run_id, status="FINISHED")
    return run_id


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--fail-abandoned"]:
        sys.exit("usage: python -m pipeline.tracking --fail-abandoned")
    ids = fail_abandoned_runs()
    print(f"marked {len(ids)} abandoned MLflow run(s) FAILED" + (f": {', '.join(ids)}" if ids else ""))
