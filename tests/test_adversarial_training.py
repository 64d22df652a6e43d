"""advlab.training.adversarial: PGD (Madry) and FGSM-RS (Wong et al.) adversarial training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks import pgd
from advlab.models import accuracy, build_model
from advlab.training import (
    HISTORY_COLUMNS,
    AdversarialClassifier,
    AdversarialTrainResult,
    ArrayDataModule,
    fit_adversarial,
    fit_classifier,
)


pytestmark = pytest.mark.usefixtures("one_thread")



def _dm(ds, **kw) -> ArrayDataModule:
    return ArrayDataModule(ds.x_train, ds.y_train, **{"val_fraction": 0.1, "batch_size": 64, "seed": 0, **kw})


def _mlp():
    return build_model("fc100_100", in_channels=1, image_size=28, init_seed=0)


FAST = {"eps": 0.2, "steps": 3, "step_size": 0.1}


class _InputRecorder(nn.Module):
    """Passes through to ``model``; keeps the inputs of the forward passes made in
    train mode (the ones the loss is taken on; the attack runs in eval mode)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.model(x)


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs"])
def test_smoke_fit_logs_robust_metrics(small, method):
    model = _mlp()
    result = fit_adversarial(model, _dm(small), method=method, epochs=2, lr=1e-3, seed=0, **FAST)
    assert isinstance(result, AdversarialTrainResult)
    h = result.history
    assert list(h.columns) == [*HISTORY_COLUMNS, "train_adv_acc", "val_adv_acc"]
    assert h.drop(columns="seconds").notna().all().all()
    # Kept epoch: best robust validation accuracy.
    assert result.best_val_adv_acc == pytest.approx(h["val_adv_acc"].max())
    assert result.best_val_acc == pytest.approx(h.loc[result.best_epoch, "val_acc"])
    assert not model.training
    assert all(torch.equal(v, result.best_state_dict[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", ["pgd", "fgsm_rs"])
def test_trains_on_points_inside_the_eps_ball(small, method):
    eps = 0.2
    recorder = _InputRecorder(_mlp())
    dm = _dm(small)
    fit_adversarial(recorder, dm, method=method, eps=eps, steps=3, step_size=0.1, epochs=1, lr=1e-3,
                    val_attack=False)
    clean = [b[0] for b in dm.train_dataloader()]  # epoch 0's batches, in order
    assert [len(s) for s in recorder.seen] == [len(c) for c in clean]
    for x, x_adv in zip(clean, recorder.seen):
        delta = (x_adv - x).flatten(1)
        assert delta.abs().max() <= eps + 1e-6
        assert x_adv.min() >= 0 and x_adv.max() <= 1
        assert (delta.abs().amax(dim=1) > 0.5 * eps).all()  # every point actually moved


def test_eps_warmup_ramps_the_training_ball(small):
    """With eps_warmup_epochs=2, batch k of n per epoch trains at eps * (k + 1) / (2 n), then at eps."""
    eps = 0.2
    recorder = _InputRecorder(_mlp())
    dm = _dm(small)
    fit_adversarial(recorder, dm, method="pgd", eps=eps, steps=3, step_size=0.1, epochs=3, lr=1e-3,
                    val_attack=False, eps_warmup_epochs=2)
    n = len(dm.train_dataloader())
    assert len(recorder.seen) == 3 * n
    loader = dm.train_dataloader()
    loaders = [list(loader) for _ in range(3)]  # one loader reshuffles each epoch, as in the fit
    for step, x_adv in enumerate(recorder.seen):
        x = loaders[step // n][step % n][0]
        bound = eps * min(1.0, (step + 1) / (2 * n))
        linf = (x_adv - x).flatten(1).abs().amax(dim=1)
        assert linf.max() <= bound + 1e-6
        assert linf.min() > 0.5 * bound  # and it is used: the points move that far
    with pytest.raises(ValueError, match="eps_warmup_epochs"):
        AdversarialClassifier(_mlp(), lr=1e-3, eps_warmup_epochs=-1)


def test_fgsm_rs_is_wong_et_al(small):
    """One step of alpha = 1.25 eps from a uniform start in the eps-ball, projected."""
    eps = 0.1
    model = _mlp()
    module = AdversarialClassifier(model, lr=1e-3, method="fgsm_rs", eps=eps)
    assert module.step_size == pytest.approx(1.25 * eps) and module.steps == 1
    x, y = small.x_train[:32], small.y_train[:32]
    got = module.attack(x, y, torch.Generator().manual_seed(3))

    gen = torch.Generator().manual_seed(3)
    delta = (2 * torch.rand(x.shape, generator=gen) - 1) * eps
    xs = (x + delta).clamp(0, 1).requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(xs), y), xs)
    want = torch.min(torch.max(xs.detach() + 1.25 * eps * g.sign(), x - eps), x + eps).clamp(0, 1)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_attack_runs_in_eval_mode_and_restores_train_mode(small):
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Dropout(0.5), nn.Linear(64, 10))
    module = AdversarialClassifier(net, lr=1e-3, **FAST)
    module.train()
    x, y = small.x_train[:16], small.y_train[:16]
    a = module.attack(x, y, torch.Generator().manual_seed(0))
    b = module.attack(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(a, b)  # dropout was off while crafting
    assert net.training
    x_adv, targets = module.training_batch((x, y))
    assert net.training and torch.equal(targets, y) and x_adv.shape == x.shape


def test_mix_clean_one_is_natural_training(small):
    dm = _dm(small)
    natural, mixed = _mlp(), _mlp()
    fit_classifier(natural, dm, epochs=1, lr=1e-3, seed=0)
    result = fit_adversarial(mixed, dm, mix_clean=1.0, epochs=1, lr=1e-3, seed=0, val_attack=False, **FAST)
    # 0 * CE(adv) adds exact zeros to the gradients: the weights are bit-identical.
    assert all(torch.equal(mixed.state_dict()[k], v) for k, v in natural.state_dict().items())
    assert math.isnan(result.history.loc[0, "val_adv_acc"])


def test_mix_clean_weights_the_two_losses(small):
    model = _mlp()
    x, y = small.x_train[:32], small.y_train[:32]
    module = AdversarialClassifier(model, lr=1e-3, mix_clean=0.25, **FAST)
    module.train()
    # training_step draws from the module's generator; replay it by hand.
    module._train_generator = torch.Generator().manual_seed(7)
    with pytest.warns(UserWarning, match="self.log"):
        loss = module.training_step((x, y), 0)
    x_adv = module.attack(x, y, torch.Generator().manual_seed(7))
    want = 0.75 * F.cross_entropy(model(x_adv), y) + 0.25 * F.cross_entropy(model(x), y)
    torch.testing.assert_close(loss, want)


def test_is_deterministic(small):
    runs = []
    for _ in range(2):
        model = _mlp()
        runs.append(fit_adversarial(model, _dm(small), method="pgd", epochs=1, lr=1e-3, seed=3, **FAST))
    a, b = runs
    cols = [c for c in a.history.columns if c != "seconds"]
    assert a.history[cols].equals(b.history[cols])
    assert all(torch.equal(v, b.best_state_dict[k]) for k, v in a.best_state_dict.items())
    other = fit_adversarial(_mlp(), _dm(small), method="pgd", epochs=1, lr=1e-3, seed=4, **FAST)
    assert not all(torch.equal(v, other.best_state_dict[k]) for k, v in a.best_state_dict.items())


def test_without_val_attack_keeps_best_clean_epoch(small):
    result = fit_adversarial(_mlp(), _dm(small), epochs=2, lr=1e-3, val_attack=False, **FAST)
    assert result.history["val_adv_acc"].isna().all() and result.history["train_adv_acc"].notna().all()
    assert result.best_val_acc == pytest.approx(result.history["val_acc"].max())


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="method"):
        AdversarialClassifier(_mlp(), lr=1e-3, method="free")
    with pytest.raises(ValueError, match="norm"):
        AdversarialClassifier(_mlp(), lr=1e-3, norm="l1")
    with pytest.raises(ValueError, match="mix_clean"):
        AdversarialClassifier(_mlp(), lr=1e-3, mix_clean=1.5)
    with pytest.raises(ValueError, match="random_start"):
        AdversarialClassifier(_mlp(), lr=1e-3, method="fgsm_rs", random_start=False)
    pgd_default = AdversarialClassifier(_mlp(), lr=1e-3, eps=0.3, steps=40)
    assert pgd_default.step_size == pytest.approx(2.5 * 0.3 / 40)


def test_pgd_training_beats_natural_under_pgd(small):
    """A few epochs of PGD training of an MLP raise PGD robust accuracy on held-out points."""
    eps = 0.1
    dm = _dm(small)
    natural, robust = _mlp(), _mlp()
    fit_classifier(natural, dm, epochs=8, lr=1e-3, seed=0)
    fit_adversarial(robust, dm, method="pgd", eps=eps, steps=5, step_size=0.05, epochs=8, lr=1e-3, seed=0,
                    val_attack=False)

    def robust_acc(model):
        adv = pgd(model, small.x_test, small.y_test, eps, steps=10, step_size=0.025,
                  generator=torch.Generator().manual_seed(1))
        return accuracy(model, adv.x_adv, small.y_test)

    nat, rob = robust_acc(natural), robust_acc(robust)
    assert rob > nat + 0.1, (nat, rob)
