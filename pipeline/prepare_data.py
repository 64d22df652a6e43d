"""Stage prepare_data: load the dataset named in params, write uint8 tensors + checksum."""
from __future__ import annotations

import sys

from advlab.data import load_dataset
from pipeline import paths
from pipeline.artifacts import tensors_checksum, to_uint8
from pipeline.config import ROOT
from pipeline.io import save_tensors, write_json
from pipeline.stage import run_stage


def main(params: dict, args) -> dict:
    data = params["data"]
    root = data["root"] if data["root"].startswith("/") else str(ROOT / data["root"])
    npz = data["npz_path"]
    if npz and not npz.startswith("/"):
        npz = str(ROOT / npz)
    ds = load_dataset(
        data["dataset"], root=root, npz_path=npz, download=data["download"],
        n_train=data["n_train"], n_test=data["n_test"], seed=params["seed"],
    )
    tensors = {
        "x_train": to_uint8(ds.x_train), "y_train": ds.y_train.long(),
        "x_test": to_uint8(ds.x_test), "y_test": ds.y_test.long(),
    }
    checksum = tensors_checksum(tensors)
    preset = params["preset"]
    meta = {
        "dataset": data["dataset"],
        "num_classes": int(ds.num_classes),
        "shape": list(ds.x_train.shape[1:]),
        "n_train": int(ds.x_train.shape[0]),
        "n_test": int(ds.x_test.shape[0]),
        "checksum": checksum,
        "classes": list(getattr(ds, "classes", None) or range(ds.num_classes)),
    }
    save_tensors(paths.path(paths.PREPARED_TENSORS, preset=preset), tensors)
    write_json(paths.path(paths.PREPARED_META, preset=preset), meta)
    return {
        "params": {"seed": params["seed"], "data": data},
        "metrics": {"n_train": meta["n_train"], "n_test": meta["n_test"]},
        "tags": {"advlab.dataset": data["dataset"], "advlab.checksum": checksum},
        "artifacts": [paths.path(paths.PREPARED_META, preset=preset)],
    }


if __name__ == "__main__":
    sys.exit(run_stage("prepare_data", main, gpus=0))
