"""DeepFool-paper fine-tuning: trains on exactly the perturbed set given, at a constant rate,
keeps the last epoch, and measures the model after every epoch."""
from __future__ import annotations

import copy

import pytest
import torch

from advlab.attacks import deepfool
from advlab.models import build_model
from advlab.models.inference import accuracy
from advlab.training import ArrayDataModule, fine_tune, fit_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def trained(small):
    model = build_model("fc100_100", in_channels=1, image_size=28, init_seed=0)
    dm = ArrayDataModule(small.x_train, small.y_train, val_fraction=0.1, batch_size=64, seed=0)
    fit_classifier(model, dm, epochs=3, lr=1e-3, seed=0)
    return model


def test_probe_sees_every_epoch_and_the_last_epoch_is_kept(trained, small):
    net = copy.deepcopy(trained)
    seen = []

    def probe(epoch, model):
        assert not model.training  # measured in eval mode
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"acc": accuracy(model, small.x_test, small.y_test)}

    result, rows = fine_tune(net, small.x_train, small.y_train, epochs=3, lr=5e-4, seed=0, on_epoch=probe)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(0 <= r["acc"] <= 1 for r in rows)
    # the model handed back is the last epoch's, not the best one's
    assert all(torch.equal(v, seen[-1][k]) for k, v in net.state_dict().items())
    assert list(result.history["lr"]) == [5e-4] * 3  # constant rate: no schedule


def test_trains_on_the_given_perturbed_set(trained, small):
    """Fine-tuning on DeepFool points (true labels) makes the model right on them."""
    net = copy.deepcopy(trained)
    x, y = small.x_train[:300], small.y_train[:300]
    x_adv = deepfool(net, x, y).x_adv
    before = accuracy(net, x_adv, y)
    fine_tune(net, x_adv, y, epochs=3, lr=1e-3, seed=0)
    assert before < 0.2
    assert accuracy(net, x_adv, y) > before + 0.4


def test_deepfool_finetuning_raises_rho_adv(trained, small):
    """The paper's Figure 6 in miniature: rho_adv of DeepFool goes up after fine-tuning on DeepFool."""
    def rho(model, x, y):
        r = deepfool(model, x, y)
        ok = r.success
        return float((r.norms["l2"][ok] / x.flatten(1).norm(dim=1)[ok]).mean())

    net = copy.deepcopy(trained)
    xt, yt = small.x_train, small.y_train
    x_adv = deepfool(net, xt, yt).x_adv
    x, y = small.x_test[:100], small.y_test[:100]
    start = rho(net, x, y)
    fine_tune(net, x_adv, yt, epochs=3, lr=5e-4, seed=0)
    assert rho(net, x, y) > 1.1 * start


def test_length_mismatch_is_an_error(trained, small):
    with pytest.raises(ValueError, match="items"):
        fine_tune(copy.deepcopy(trained), small.x_train[:10], small.y_train[:9], epochs=1, lr=1e-3)
