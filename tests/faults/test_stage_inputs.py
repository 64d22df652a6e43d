"""Bad input met by real stage commands: each fails with a message naming the file or key and what
was expected, exits non-zero, and writes no output and no MLflow run."""
from __future__ import annotations

import pickle
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

from advlab.data import load_dataset
from tests.conftest import SHARED
from tests.faults.conftest import clone, files_under, stage

pytestmark = pytest.mark.faults_bad_input

TENSORS = "data/prepared/smoke/tensors.pt"
LENET = "models/smoke/lenet.pt"
OUTPUTS = ("models", "results", "metrics", "reports")


class _Payload:
    """Unpickling this would run `touch <marker>`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def _alter_prepared(project: Path) -> None:
    tensors = torch.load(project / TENSORS, weights_only=True)
    tensors["x_test"][0, 0, 14, 14] ^= 1  # one bit of one pixel
    torch.save(tensors, project / TENSORS)


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _other_arch(project: Path) -> None:
    shutil.copy(project / "models/smoke/fc100_100.pt", project / LENET)


def _not_a_checkpoint(project: Path) -> None:
    (project / LENET).write_text("lenet weights: see the lab notebook\n")


def _pickle_bearing(project: Path) -> None:
    with open(project / LENET, "wb") as fh:
        pickle.dump({"format": _Payload(project / "EXECUTED")}, fh)


def _state_dict_only(project: Path) -> None:
    payload = torch.load(project / LENET, weights_only=True)
    torch.save(payload["state_dict"], project / LENET)


# case -> (how the project is damaged, the stage command, what the message must hold)
CASES = {
    "prepared data altered": (_alter_prepared, ("train", "--model", "fc100_100"), [TENSORS, "checksum mismatch"]),
    "prepared data truncated": (lambda p: _truncate(p / TENSORS), ("train", "--model", "fc100_100"),
                                [TENSORS, "not a readable tensor file"]),
    "prepared data missing": (lambda p: (p / TENSORS).unlink(), ("attack", "--model", "lenet", "--attack", "fgsm"),
                              [TENSORS, "missing; run the stage that makes it first"]),
    "checkpoint truncated": (lambda p: _truncate(p / LENET), ("attack", "--model", "lenet", "--attack", "pgd"),
                             [LENET, "truncated, corrupt, or not written by torch.save"]),
    "checkpoint of another architecture": (_other_arch, ("attack", "--model", "lenet", "--attack", "fgsm"),
                                           [LENET, "fc100_100"]),
    "not a checkpoint": (_not_a_checkpoint, ("attack", "--model", "lenet", "--attack", "deepfool"), [LENET]),
    "bare state_dict, not an advlab checkpoint": (_state_dict_only, ("attack", "--model", "lenet", "--attack", "fgsm"),
                                                  [LENET, "not an advlab checkpoint"]),
    "pickle-bearing checkpoint": (_pickle_bearing, ("attack", "--model", "lenet", "--attack", "fgsm"),
                                  [LENET, "refused"]),
    "checkpoint missing": (lambda p: (p / LENET).unlink(), ("attack", "--model", "lenet", "--attack", "fgsm"),
                           [LENET, "does not exist"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_stage_refuses_damaged_input(smoke_project, tmp_path, case):
    damage, command, expected = CASES[case]
    project = clone(smoke_project, tmp_path / "p")
    damage(project)
    before = files_under(project, *OUTPUTS)
    out = stage(project, *command)
    assert out.returncode == 2, out.stderr[-3000:]
    message = out.stderr.strip().splitlines()[-2]
    assert message.startswith(f"error: {command[0]}: "), out.stderr[-3000:]
    for part in expected:
        assert part in message, message
    assert "Traceback" not in out.stderr
    assert files_under(project, *OUTPUTS) == before
    assert not (project / "mlflow.db").exists()
    assert not (project / "EXECUTED").exists()


def test_debug_flag_shows_the_traceback(smoke_project, tmp_path):
    from tests.faults.conftest import fault_env

    project = clone(smoke_project, tmp_path / "p")
    _not_a_checkpoint(project)
    out = stage(project, "attack", "--model", "lenet", "--attack", "fgsm", env=fault_env(ADVLAB_DEBUG="1"))
    assert out.returncode != 0 and "Traceback" in out.stderr and "CheckpointError" in out.stderr


# -- raw datasets ----------------------------------------------------------------------------------

RAW = SHARED / "data" / "MNIST" / "raw"


def _mnist_copy(tmp_path: Path) -> Path:
    if not RAW.is_dir():
        pytest.skip(f"{RAW} (torchvision MNIST files) not present: it exists only in the development workplace")
    root = tmp_path / "root"
    shutil.copytree(RAW, root / "MNIST" / "raw")
    for f in (root / "MNIST" / "raw").iterdir():
        f.chmod(0o644)
    return root


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_mnist_raw_file_checksum_mismatch(tmp_path, damage):
    root = _mnist_copy(tmp_path)
    path = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = bytearray(path.read_bytes())
    if damage == "truncated":
        data = data[:5000]
    else:
        data[100] = (data[100] + 1) % 10  # one test label changed: parses fine, silently wrong
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum mismatch") as info:
        load_dataset("mnist", root=root, n_train=100, n_test=100)
    assert str(path) in str(info.value) and "truncated or altered" in str(info.value)


def test_mnist_intact_copy_loads(tmp_path):
    root = _mnist_copy(tmp_path)
    assert len(load_dataset("mnist", root=root, n_train=100, n_test=100).x_test) == 100


def test_mnist_missing_and_offline(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(ConnectionError, match="could not download mnist") as info:
        load_dataset("mnist", root=tmp_path, download=True)
    assert str(tmp_path) in str(info.value)
    with pytest.raises(FileNotFoundError, match="data.root") as info:
        load_dataset("mnist", root=tmp_path, download=False)
    assert "download" in str(info.value)


def test_prepare_data_stage_offline_names_the_params(smoke_project, tmp_path):
    project = clone(smoke_project, tmp_path / "p")
    params = project / "params.yaml"
    text = params.read_text()
    assert "dataset: mnist5k" in text and "download: true" in text
    # download off: the test must not depend on whether this machine is online
    params.write_text(text.replace("dataset: mnist5k", "dataset: mnist", 1)
                      .replace("download: true", "download: false", 1))
    shutil.rmtree(project / "data" / "prepared")
    out = stage(project, "prepare_data")
    assert out.returncode == 2, out.stderr[-3000:]
    assert "error: prepare_data: mnist files missing or corrupted under" in out.stderr
    assert "data.root" in out.stderr and "download" in out.stderr
    assert not (project / "data" / "prepared").exists()
