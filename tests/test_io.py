"""Atomic outputs and safe loading."""
import os
import pickle

import pytest
import torch

from pipeline.io import atomic_dir, atomic_path, load_tensors, save_tensors, write_json


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "out" / "file.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert os.listdir(target.parent) == []


def test_failed_dir_keeps_the_old_one(tmp_path):
    target = tmp_path / "figs"
    target.mkdir()
    (target / "old.png").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "new.png").write_text("new")
            raise RuntimeError("killed")
    assert sorted(os.listdir(target)) == ["old.png"]
    assert sorted(os.listdir(tmp_path)) == ["figs"]
    with atomic_dir(target) as tmp:
        (tmp / "new.png").write_text("new")
    assert sorted(os.listdir(target)) == ["new.png"]


def test_json_is_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": torch.tensor(1.5), "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1.5\n}\n'


class _Boom:
    def __reduce__(self):
        return (os.system, ("touch /tmp/advlab-pwned",))


@pytest.mark.faults_bad_input
def test_pickle_bearing_tensor_file_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Boom()}, fh)
    if os.path.exists("/tmp/advlab-pwned"):
        os.unlink("/tmp/advlab-pwned")
    with pytest.raises(ValueError, match="not a readable tensor file"):
        load_tensors(path)
    assert not os.path.exists("/tmp/advlab-pwned")


def test_tensor_round_trip(tmp_path):
    save_tensors(tmp_path / "t.pt", {"x": torch.arange(4)})
    assert torch.equal(load_tensors(tmp_path / "t.pt")["x"], torch.arange(4))
