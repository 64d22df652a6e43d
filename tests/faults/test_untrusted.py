"""Untrusted files are data, never code: every loader refuses pickles (weights_only=True,
allow_pickle=False), and the code base holds no trusting load; the MLflow UI listens on localhost
only; no stage records secrets or the environment."""
from __future__ import annotations

import ast
import os
import pickle
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT
from tests.faults.conftest import clone, fault_env, ok, stage

pytestmark = pytest.mark.faults_bad_input

def _python_files():
    for top in ("src", "pipeline", "bench", "tests"):
        yield from (ROOT / top).rglob("*.py")


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            owner = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            yield owner, node.func.attr, node


def test_no_trusting_load_in_the_code_base():
    """torch.load needs weights_only=True and np.load allow_pickle=False, written out; pickle's and
    torch's other unpicklers are not used. A test may break the rule on a line marked untrusted-ok."""
    offences = []
    for path in _python_files():
        text = path.read_text()
        lines = text.splitlines()
        for owner, attr, node in _calls(ast.parse(text)):
            kw = {k.arg: k.value for k in node.keywords}
            line = lines[node.lineno - 1]
            if "untrusted-ok" in line:
                continue
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            if owner == "torch" and attr == "load":
                value = kw.get("weights_only")
                if not (isinstance(value, ast.Constant) and value.value is True):
                    offences.append(f"{where}: torch.load without weights_only=True")
            if owner in ("np", "numpy") and attr == "load":
                value = kw.get("allow_pickle")
                if not (isinstance(value, ast.Constant) and value.value is False):
                    offences.append(f"{where}: np.load without allow_pickle=False")
            if owner in ("pickle", "cPickle", "dill", "joblib") and attr in ("load", "loads"):
                offences.append(f"{where}: {owner}.{attr}")
    assert offences == []


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _loaders():
    from advlab.data import load_dataset
    from advlab.models import load_checkpoint
    from pipeline.io import load_tensors

    return {
        "checkpoint": lambda p: load_checkpoint(p),
        "tensor file": lambda p: load_tensors(p),
        "npz": lambda p: load_dataset("npz", npz_path=p),
    }


@pytest.mark.parametrize("kind", ["checkpoint", "tensor file", "npz"])
def test_pickle_bearing_file_is_refused_not_executed(tmp_path, kind):
    marker = tmp_path / "EXECUTED"
    path = tmp_path / ("data.npz" if kind == "npz" else "file.pt")
    if kind == "npz":
        arrays = {"x_train": np.zeros((2, 4, 4), np.uint8), "y_train": np.array([_Payload(marker)] * 2, dtype=object),
                  "x_test": np.zeros((2, 4, 4), np.uint8), "y_test": np.zeros(2, np.int64)}
        np.savez(path, **arrays)
    else:
        import torch

        torch.save({"state_dict": {"w": torch.zeros(1)}, "format": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        _loaders()[kind](path)
    assert not marker.exists()
    # the file is live: unpickling it for real runs the payload
    with open(path if kind != "npz" else tmp_path / "raw.pkl", "wb") as fh:
        pickle.dump(_Payload(marker), fh)
    with open(fh.name, "rb") as fh:
        pickle.load(fh)  # untrusted-ok: the payload is live, so the refusal above was real
    assert marker.exists()


def test_mlflow_ui_listens_on_localhost_only():
    recipe = (ROOT / "Makefile").read_text()
    ui = re.search(r"^ui:.*\n((?:\t.*\n)+)", recipe, re.M).group(1)
    assert "mlflow ui" in ui and "--host 127.0.0.1" in ui
    assert "0.0.0.0" not in recipe


def test_no_stage_records_secrets_or_the_environment(smoke_project, tmp_path):
    project = clone(smoke_project, tmp_path / "p")
    secrets = {"AWS_SECRET_ACCESS_KEY": "sekrit-aws-4711", "MLFLOW_TRACKING_PASSWORD": "sekrit-mlflow-4711",
               "GITHUB_TOKEN": "sekrit-gh-4711", "ADVLAB_UNRELATED": "sekrit-env-4711"}
    out = ok(stage(project, "attack", "--model", "lenet", "--attack", "fgsm", env=fault_env(**secrets)))
    leaked = [f"stdout/stderr: {v}" for v in secrets.values() if v in out.stdout + out.stderr]
    tracked = set(subprocess.run(["git", "ls-files"], cwd=project, capture_output=True, text=True).stdout.split())
    for path in project.rglob("*"):  # everything the stages wrote: outputs, the MLflow store, artifacts
        if path.is_file() and ".git" not in path.parts and str(path.relative_to(project)) not in tracked:
            data = path.read_bytes()
            leaked += [f"{path.relative_to(project)}: {k}" for k, v in secrets.items() if v.encode() in data]
            # nor the environment wholesale (its variable names)
            leaked += [f"{path.relative_to(project)}: names {k}" for k in secrets if k.encode() in data]
    assert (project / "mlflow.db").exists()
    assert leaked == []
