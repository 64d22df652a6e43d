"""FGSM with a searched eps: the smallest eps reaching an error rate, and per-point minimal eps."""
from __future__ import annotations

import math

import pytest
import torch

from advlab.attacks import fgsm, fgsm_direction, fgsm_eps_for_rate, fgsm_minimal_eps


def _error_rate(model, x, y, eps):
    x_adv = fgsm(model, x, y, eps).x_adv
    with torch.no_grad():
        return float((model(x_adv).argmax(1) != y).float().mean())


def test_direction_is_fgsm_step(mlp):
    d = fgsm_direction(mlp.model, mlp.x, mlp.y)
    expected = fgsm(mlp.model, mlp.x, mlp.y, 0.1).x_adv
    assert torch.equal((mlp.x + 0.1 * d).clamp(0, 1), expected)


@pytest.mark.parametrize("rate", [0.5, 0.9])
def test_eps_for_rate_is_the_smallest_reaching_it(mlp, rate):
    tol = 1e-4
    eps = fgsm_eps_for_rate(mlp.model, mlp.x, mlp.y, rate, tol=tol)
    assert 0 < eps < 1
    assert _error_rate(mlp.model, mlp.x, mlp.y, eps) >= rate
    assert _error_rate(mlp.model, mlp.x, mlp.y, eps - tol) < rate


def test_eps_for_rate_unreachable_is_inf(mlp):
    assert fgsm_eps_for_rate(mlp.model, mlp.x, mlp.y, 1.0, max_eps=1e-3) == math.inf


def test_minimal_eps_per_point_flips_exactly_there(cnn):
    tol = 1e-4
    eps = fgsm_minimal_eps(cnn.model, cnn.x, cnn.y, tol=tol)
    d = fgsm_direction(cnn.model, cnn.x, cnn.y)
    assert torch.all(eps[~cnn.correct] == 0)
    found = torch.isfinite(eps) & cnn.correct
    assert found.float().mean() > 0.8
    with torch.no_grad():
        at = cnn.model((cnn.x + eps.nan_to_num(posinf=0).view(-1, 1, 1, 1) * d).clamp(0, 1)).argmax(1)
        below = cnn.model((cnn.x + (eps - tol).clamp_min(0).nan_to_num(posinf=0).view(-1, 1, 1, 1) * d)
                          .clamp(0, 1)).argmax(1)
    assert torch.all(at[found] != cnn.y[found])
    assert torch.all(below[found] == cnn.y[found])
    # The per-point search never needs more than the eps that fools 90% of the points.
    eps90 = fgsm_eps_for_rate(cnn.model, cnn.x, cnn.y, 0.9)
    assert float(eps[found].quantile(0.5)) <= eps90


def test_bad_arguments_are_named(mlp):
    with pytest.raises(ValueError, match="rate"):
        fgsm_eps_for_rate(mlp.model, mlp.x, mlp.y, 1.5)
    with pytest.raises(ValueError, match="max_eps"):
        fgsm_minimal_eps(mlp.model, mlp.x, mlp.y, max_eps=0)
    with pytest.raises(ValueError, match="tol"):
        fgsm_minimal_eps(mlp.model, mlp.x, mlp.y, tol=-1)
