"""advlab.training: data module, seeded Lightning fits, history, best-epoch selection."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from advlab.data import load_dataset
from advlab.models import accuracy, build_model
from advlab.training import (
    HISTORY_COLUMNS,
    ArrayDataModule,
    NaturalClassifier,
    fit_classifier,
    fit_module,
)


pytestmark = pytest.mark.usefixtures("one_thread")



def _dm(ds, **kw) -> ArrayDataModule:
    return ArrayDataModule(ds.x_train, ds.y_train, **{"val_fraction": 0.1, "batch_size": 64, "seed": 0, **kw})


def _lenet():
    return build_model("lenet", in_channels=1, image_size=28, init_seed=0)


# -- data module -----------------------------------------------------------------


def test_datamodule_split_is_stratified_disjoint_and_seeded(small):
    dm = _dm(small)
    assert dm.n_train == 540 and dm.n_val == 60
    assert torch.bincount(dm.y_val, minlength=10).tolist() == [6] * 10
    assert not set(dm.train_idx.tolist()) & set(dm.val_idx.tolist())
    again = _dm(small)
    assert torch.equal(again.val_idx, dm.val_idx)
    assert not torch.equal(_dm(small, seed=1).val_idx, dm.val_idx)


def test_datamodule_loaders(small):
    dm = _dm(small, x_test=small.x_test, y_test=small.y_test, eval_batch_size=50)
    batches = list(dm.train_dataloader())
    assert [len(b[0]) for b in batches] == [64] * 8 + [28]
    assert batches[0][0].shape == (64, 1, 28, 28) and batches[0][1].dtype == torch.int64
    # Same seed, same order; a new loader starts the same sequence again.
    assert torch.equal(next(iter(dm.train_dataloader()))[1], batches[0][1])
    assert sum(len(b[0]) for b in dm.val_dataloader()) == 60
    assert [len(b[0]) for b in dm.test_dataloader()] == [50] * 4
    with pytest.raises(RuntimeError, match="x_test"):
        _dm(small).test_dataloader()
    with pytest.raises(ValueError, match="val_fraction"):
        _dm(small, val_fraction=1.0)


# -- fitting ---------------------------------------------------------------------


def test_fit_runs_records_history_and_keeps_best(small, tmp_path: Path):
    model = _lenet()
    result = fit_classifier(model, _dm(small), epochs=2, lr=1e-3, seed=0, log_dir=tmp_path / "log")
    h = result.history
    assert isinstance(h, pd.DataFrame) and list(h.columns) == HISTORY_COLUMNS
    assert h["epoch"].tolist() == [0, 1]
    assert h[["train_loss", "train_acc", "val_loss", "val_acc", "seconds", "lr"]].notna().all().all()
    assert (h["seconds"] > 0).all() and h["lr"].eq(1e-3).all()
    assert result.best_epoch in (0, 1)
    assert result.best_val_acc == pytest.approx(h["val_acc"].max())
    assert result.best_val_acc == pytest.approx(h.loc[result.best_epoch, "val_acc"])
    # The model is left holding the best epoch's weights, in eval mode.
    assert not model.training
    assert all(torch.equal(v, result.best_state_dict[k]) for k, v in model.state_dict().items())
    assert accuracy(model, small.x_test, small.y_test) > 0.5
    csv = pd.read_csv(tmp_path / "log" / "metrics.csv")
    assert {"train_loss", "train_acc", "val_loss", "val_acc"} <= set(csv.columns)
    assert sorted(csv["epoch"].unique()) == [0, 1]


def test_fit_is_deterministic(small):
    runs = []
    for _ in range(2):
        model = _lenet()
        result = fit_classifier(model, _dm(small), epochs=2, lr=1e-3, seed=5)
        runs.append((result, accuracy(model, small.x_test, small.y_test)))
    (a, acc_a), (b, acc_b) = runs
    cols = [c for c in HISTORY_COLUMNS if c != "seconds"]
    pd.testing.assert_frame_equal(a.history[cols], b.history[cols])
    assert acc_a == acc_b and a.best_epoch == b.best_epoch
    assert all(torch.equal(v, b.best_state_dict[k]) for k, v in a.best_state_dict.items())


def test_fit_without_validation_keeps_last_epoch(small):
    model = build_model("fc10", in_channels=1, image_size=28, init_seed=0)
    result = fit_classifier(model, _dm(small, val_fraction=0.0), epochs=2, lr=1e-2, seed=0)
    assert result.best_epoch == 1 and math.isnan(result.best_val_acc)
    assert result.history["val_acc"].isna().all() and result.history["train_acc"].notna().all()


@pytest.mark.parametrize(
    "options",
    [
        {"optimizer": "sgd", "lr": 0.05, "nesterov": True, "lr_schedule": "step", "lr_step_size": 1},
        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4, "lr_schedule": "cosine"},
        {"optimizer": "adam", "lr": 1e-3, "lr_schedule": "onecycle"},
        {"optimizer": "sgd", "lr": 0.05, "lr_schedule": "multistep", "lr_milestones": [1]},
    ],
    ids=["sgd-step", "adamw-cosine", "adam-onecycle", "sgd-multistep"],
)
def test_optimizers_and_schedules(small, options):
    model = build_model("fc100_100", in_channels=1, image_size=28, init_seed=0)
    result = fit_classifier(model, _dm(small), epochs=2, seed=0, **options)
    assert len(result.history) == 2 and result.history["train_loss"].notna().all()
    if options["lr_schedule"] in ("step", "multistep"):
        assert result.history["lr"].tolist() == pytest.approx([0.05, 0.005])


def test_bad_options_are_rejected():
    model = _lenet()
    with pytest.raises(ValueError, match="optimizer"):
        NaturalClassifier(model, lr=0.1, optimizer="rmsprop")
    with pytest.raises(ValueError, match="lr_schedule"):
        NaturalClassifier(model, lr=0.1, lr_schedule="linear")
    with pytest.raises(ValueError, match="lr_milestones"):
        NaturalClassifier(model, lr=0.1, lr_schedule="multistep")


class _SoftLabelClassifier(NaturalClassifier):
    """The subclass hook a distillation module would use: soft targets at temperature T."""

    temperature = 4.0

    def loss(self, logits, targets):
        return F.cross_entropy(logits / self.temperature, targets)


def test_subclass_hooks_and_soft_labels(small):
    soft = F.one_hot(small.y_train, 10).float() * 0.9 + 0.01
    dm = ArrayDataModule(small.x_train, soft, val_fraction=0.1, batch_size=64, seed=0)
    assert dm.n_val == 60
    module = _SoftLabelClassifier(_lenet(), lr=1e-3)
    result = fit_module(module, dm, epochs=1, seed=0)
    row = result.history.iloc[0]
    assert math.isfinite(row["train_loss"]) and math.isfinite(row["val_acc"])


def test_fit_restores_global_determinism_flag(small):
    before = torch.are_deterministic_algorithms_enabled()
    fit_classifier(build_model("fc10", in_channels=1, image_size=28), _dm(small), epochs=1, lr=1e-2)
    assert torch.are_deterministic_algorithms_enabled() == before


@pytest.mark.slow
def test_lenet_mnist5k_acceptance():
    """The acceptance bar: lenet on mnist5k (4000 incl. 10% val / 1000 test) >= 96%."""
    ds = load_dataset("mnist5k", seed=0)
    model = _lenet()
    dm = ArrayDataModule(ds.x_train, ds.y_train, val_fraction=0.1, batch_size=64, seed=0)
    fit_classifier(model, dm, epochs=15, lr=1e-3, optimizer="adam", lr_schedule="cosine", seed=0)
    assert accuracy(model, ds.x_test, ds.y_test) >= 0.96
