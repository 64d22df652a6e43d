"""advlab.training.distillation: defensive distillation (Papernot et al. 2016, Carlini's code)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from advlab.models import build_model
from advlab.training import (
    ArrayDataModule,
    DistilledClassifier,
    TemperatureScaled,
    fit_classifier,
    fit_distillation,
    soft_labels,
)
from advlab.training import distillation as distillation_module


pytestmark = pytest.mark.usefixtures("one_thread")



def _mlp():
    return build_model("fc100_100", in_channels=1, image_size=28, init_seed=0)


def _max_prob(model, x) -> torch.Tensor:
    with torch.no_grad():
        return F.softmax(model(x), dim=1).amax(dim=1)


def test_smoke_teacher_and_student(small, tmp_path: Path):
    teacher = build_model("lenet", in_channels=1, image_size=28, init_seed=0)
    student = build_model("lenet", in_channels=1, image_size=28, init_seed=0)
    t_res, s_res = fit_distillation(teacher, student, small.x_train, small.y_train, temperature=100, epochs=1,
                                    lr=1e-3, batch_size=64, seed=0, log_dir=tmp_path)
    for res, model in ((t_res, teacher), (s_res, student)):
        assert len(res.history) == 1 and res.history.drop(columns="seconds").notna().all().all()
        assert not model.training
        # The student comes back as the plain T = 1 network: same keys as a fresh model.
        assert set(res.best_state_dict) == set(_fresh_lenet_keys())
    for name in ("teacher", "student"):
        csv = pd.read_csv(tmp_path / name / "metrics.csv")
        assert {"train_loss", "val_loss", "val_acc"} <= set(csv.columns)


def _fresh_lenet_keys():
    return build_model("lenet", in_channels=1, image_size=28).state_dict().keys()


def test_loss_is_cross_entropy_of_logits_over_T():
    T = 20.0
    module = DistilledClassifier(_mlp(), temperature=T, lr=1e-3)
    logits = torch.randn(8, 10) * 50
    soft = F.softmax(torch.randn(8, 10), dim=1)
    hard = torch.arange(8) % 10
    want_soft = -(soft * F.log_softmax(logits / T, dim=1)).sum(dim=1).mean()
    want_hard = -F.log_softmax(logits / T, dim=1)[torch.arange(8), hard].mean()
    torch.testing.assert_close(module.loss(logits, soft), want_soft)
    torch.testing.assert_close(module.loss(logits, hard), want_hard)


def test_training_step_uses_raw_model_logits_over_T(small):
    T = 100.0
    model = _mlp()
    module = DistilledClassifier(model, temperature=T, lr=1e-3)
    x = small.x_train[:16]
    soft = F.softmax(torch.randn(16, 10), dim=1)
    with pytest.warns(UserWarning, match="self.log"):
        loss = module.training_step((x, soft), 0)
    want = -(soft * F.log_softmax(model(x) / T, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(module(x), model(x))  # forward is the T = 1 network


def test_temperature_scaled_and_soft_labels(small):
    model = _mlp()
    fit_classifier(model, ArrayDataModule(small.x_train, small.y_train, seed=0), epochs=3, lr=3e-3)
    x = small.x_train[:100]
    torch.testing.assert_close(TemperatureScaled(model, 4.0)(x), model(x) / 4.0)
    model.train()
    hot, cold = soft_labels(model, x, 100.0, batch_size=30), soft_labels(model, x, 1.0)
    assert model.training  # mode restored
    assert hot.shape == (100, 10) and not hot.requires_grad and not hot.is_inference()
    torch.testing.assert_close(hot.sum(dim=1), torch.ones(100))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(hot, F.softmax(model(x) / 100.0, dim=1))
    # T = 100 flattens a natural network's predictions to near uniform; T = 1 is sharp.
    assert hot.amax(dim=1).max() < 0.15 and hot.amin(dim=1).min() > 0.05
    assert cold.amax(dim=1).mean() > 0.6
    with pytest.raises(ValueError, match="temperature"):
        soft_labels(model, x, 0.0)


def test_soft_labels_on_train_split_only_val_keeps_hard_labels(small, monkeypatch):
    seen = {}
    real = distillation_module.soft_labels

    def spy(teacher, x, T, **kw):
        seen["x"] = x
        return real(teacher, x, T, **kw)

    built = []
    real_dm = distillation_module._SoftTrainDataModule

    def spy_dm(*args, **kw):
        built.append(real_dm(*args, **kw))
        return built[-1]

    monkeypatch.setattr(distillation_module, "soft_labels", spy)
    monkeypatch.setattr(distillation_module, "_SoftTrainDataModule", spy_dm)
    fit_distillation(_mlp(), _mlp(), small.x_train, small.y_train, epochs=1, lr=1e-3, batch_size=64, seed=2)

    reference = ArrayDataModule(small.x_train, small.y_train, val_fraction=0.1, seed=2)
    (dm,) = built
    assert torch.equal(seen["x"], reference.x_train)
    assert torch.equal(dm.val_idx, reference.val_idx) and torch.equal(dm.y_val, reference.y_val)
    assert dm.y_val.dtype == torch.int64 and dm.y_train.shape == (dm.n_train, 10)
    assert torch.is_floating_point(dm.y_train)


def test_distilled_student_is_saturated_at_T1(small):
    """Trained at T = 100 and deployed at T = 1, the student's softmax is (nearly)
    one-hot: the mechanism by which gradients of softmax-based losses vanish."""
    options = {"epochs": 3, "lr": 3e-2, "optimizer": "adam", "batch_size": 64, "seed": 0}
    teacher, student = _mlp(), _mlp()
    fit_distillation(teacher, student, small.x_train, small.y_train, temperature=100, **options)
    natural = _mlp()
    dm = ArrayDataModule(small.x_train, small.y_train, val_fraction=0.1, batch_size=64, seed=0)
    fit_classifier(natural, dm, epochs=3, lr=3e-2, seed=0)

    distilled_saturated = (_max_prob(student, small.x_train) > 0.99).float().mean()
    natural_saturated = (_max_prob(natural, small.x_train) > 0.99).float().mean()
    assert distilled_saturated > 0.9
    assert distilled_saturated > natural_saturated + 0.2
    # ... and the input gradient of the cross-entropy all but vanishes.
    x = small.x_train[:200].clone().requires_grad_(True)

    def grad_norm(model):
        (g,) = torch.autograd.grad(F.cross_entropy(model(x), small.y_train[:200], reduction="sum"), x)
        return g.flatten(1).norm(dim=1).median()

    assert grad_norm(student) < 1e-3 * grad_norm(natural)


def test_is_deterministic(small):
    runs = []
    for _ in range(2):
        teacher, student = _mlp(), _mlp()
        t_res, s_res = fit_distillation(teacher, student, small.x_train, small.y_train, epochs=1, lr=1e-2,
                                        batch_size=64, seed=4)
        runs.append((t_res, s_res))
    for a, b in zip(*runs):
        assert all(torch.equal(v, b.best_state_dict[k]) for k, v in a.best_state_dict.items())
        cols = [c for c in a.history.columns if c != "seconds"]
        pd.testing.assert_frame_equal(a.history[cols], b.history[cols])


def test_bad_temperature_is_rejected():
    for bad in (0.0, -1.0, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            DistilledClassifier(_mlp(), temperature=bad, lr=1e-3)
