"""advlab.training.autoencoder: sparse-autoencoder pretraining of AE400-10, then fine-tuning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from advlab.data import load_dataset
from advlab.models import accuracy, build_model, load_checkpoint, save_checkpoint
from advlab.training import (
    AUTOENCODER_HISTORY_COLUMNS,
    ArrayDataModule,
    SparseAutoencoder,
    fit_classifier,
    pretrain_autoencoder,
)

pytestmark = pytest.mark.usefixtures("one_thread")

RHO = 0.05


def _ae(**kw):
    return build_model("ae400_10", in_channels=1, image_size=28, init_seed=0, **kw)


@pytest.fixture(scope="module")
def digits():
    """2000 / 500 stratified mnist5k images. `small`'s 540 training images put an MLP at
    about 85% whatever the pretraining, too close to the bar to test it."""
    return load_dataset("mnist5k", n_train=2000, n_test=500, seed=0)


@pytest.fixture(scope="module")
def pretrained(one_thread, digits):
    """AE400-10 pretrained for 5 epochs on `digits` (about 3 s), with the metrics of the
    untrained autoencoder (same initial weights) for comparison."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        before = SparseAutoencoder(_ae(), lr=1e-2).evaluate(digits.x_test)
    model = _ae()
    result = pretrain_autoencoder(model, digits.x_train, epochs=5, batch_size=32, lr=1e-2, seed=0,
                                  sparsity=RHO, beta=3.0, weight_decay=1e-4)
    return model, result, before


def test_encoder_is_shared_and_sees_the_normalised_input():
    model = _ae(mean=0.13, std=0.31)
    ae = SparseAutoencoder(model, lr=1e-3)
    assert ae.encoder[1] is model.net.encoder and ae.encoder[2] is model.net.sigmoid
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = ae.encode(x)
        torch.testing.assert_close(h, torch.sigmoid(model.net.encoder(((x - 0.13) / 0.31).flatten(1))))
        out = ae(x)
    assert h.shape == (5, 400) and out.shape == x.shape and ((out > 0) & (out < 1)).all()
    # Only the encoder and the decoder are optimised; the softmax layer waits for fine-tuning.
    opt_params = {id(p) for g in ae.configure_optimizers().param_groups for p in g["params"]}
    assert id(model.net.encoder.weight) in opt_params and id(model.net.fc.weight) not in opt_params


def test_needs_a_sigmoid_encoder_and_valid_options():
    with pytest.raises(ValueError, match="'encoder'"):
        SparseAutoencoder(build_model("fc100_100", in_channels=1, image_size=28), lr=1e-3)
    with pytest.raises(TypeError, match="ImageClassifier"):
        SparseAutoencoder(torch.nn.Linear(2, 2), lr=1e-3)
    with pytest.raises(ValueError, match="sparsity"):
        SparseAutoencoder(_ae(), lr=1e-3, sparsity=1.0)
    with pytest.raises(ValueError, match="loss"):
        SparseAutoencoder(_ae(), lr=1e-3, loss="l1")
    with pytest.raises(ValueError, match="epochs"):
        pretrain_autoencoder(_ae(), torch.zeros(4, 1, 28, 28), epochs=0, batch_size=2, lr=1e-3)


def test_pretraining_learns_a_sparse_code_in_the_classifier(pretrained, digits):
    model, result, before = pretrained
    h = result.history
    assert list(h.columns) == AUTOENCODER_HISTORY_COLUMNS and h["epoch"].tolist() == list(range(5))
    assert h.drop(columns="epoch").notna().all().all() and (h["seconds"] > 0).all()
    assert h["recon_loss"].iloc[-1] < 0.5 * h["recon_loss"].iloc[0]
    assert result.seconds > 0
    after = result.autoencoder.evaluate(digits.x_test)
    # Held-out reconstruction: far better than the untrained autoencoder, and better than
    # predicting the mean training image for every input.
    assert after["recon_loss"] < 0.4 * before["recon_loss"]
    mean_image_mse = float((digits.x_test - digits.x_train.mean(0)).pow(2).mean())
    assert after["mse"] < 0.9 * mean_image_mse
    # Sparse: the mean hidden activation is driven from ~0.5 to near rho.
    assert before["mean_activation"] > 0.3
    assert abs(after["mean_activation"] - RHO) < 0.025
    assert abs(h["mean_activation"].iloc[-1] - RHO) < 0.025
    # The weights were written into the classifier itself; its softmax layer is untouched.
    fresh = _ae()
    assert not torch.equal(model.net.encoder.weight, fresh.net.encoder.weight)
    assert torch.equal(model.net.fc.weight, fresh.net.fc.weight)
    assert model.training  # the mode it came in, ready for fine-tuning
    assert not result.autoencoder.training


def test_pretraining_then_fine_tuning_classifies(pretrained, digits, tmp_path: Path):
    model = _ae()
    model.load_state_dict(pretrained[0].state_dict())
    dm = ArrayDataModule(digits.x_train, digits.y_train, val_fraction=0.0, batch_size=32, seed=0)
    fit_classifier(model, dm, epochs=2, lr=1e-2, seed=0)
    assert accuracy(model, digits.x_test, digits.y_test) > 0.85
    # An ordinary ae400_10 checkpoint: no autoencoder parts in it.
    path = save_checkpoint(tmp_path / "ae400_10.pt", model, {})
    loaded, _ = load_checkpoint(path)
    assert set(loaded.state_dict()) == set(model.state_dict())
    assert not any("decoder" in k for k in loaded.state_dict())


def test_pretraining_is_seeded_and_logs_to_csv(small, tmp_path: Path):
    x = small.x_train[:128]
    runs = []
    for seed, log_dir in ((0, tmp_path / "log"), (0, None), (1, None)):
        model = _ae()
        r = pretrain_autoencoder(model, x, epochs=2, batch_size=32, lr=1e-2, seed=seed, loss="bce", log_dir=log_dir)
        runs.append((model.state_dict(), r.history))
    (a, ha), (b, hb), (c, _) = runs
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert ha.drop(columns="seconds").equals(hb.drop(columns="seconds"))
    assert not torch.equal(a["net.encoder.weight"], c["net.encoder.weight"])
    assert math.isfinite(ha["recon_loss"].iloc[-1])
    assert (tmp_path / "log" / "metrics.csv").is_file()
    assert not list(tmp_path.rglob("*.ckpt"))
