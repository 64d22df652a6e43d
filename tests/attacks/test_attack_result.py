import dataclasses

import numpy as np
import pytest
import torch

from advlab.attacks import AttackResult, check_inputs, perturbation_norms
from advlab.attacks.result import make_result


def test_perturbation_norms_match_numpy():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(5, 3, 4, 4, generator=g)
    x_adv = x.clone()
    x_adv[:, :, :2] += 0.1 * torch.randn(5, 3, 2, 4, generator=g)
    x_adv[4] = x[4]  # one untouched point
    n = perturbation_norms(x, x_adv)
    assert set(n) == {"l0", "l2", "linf"}
    d = (x_adv - x).flatten(1).numpy()
    np.testing.assert_allclose(n["l0"].numpy(), np.linalg.norm(d, ord=0, axis=1), rtol=1e-6)
    np.testing.assert_allclose(n["l2"].numpy(), np.linalg.norm(d, ord=2, axis=1), rtol=1e-5)
    np.testing.assert_allclose(n["linf"].numpy(), np.linalg.norm(d, ord=np.inf, axis=1), rtol=1e-6)
    assert n["l2"][4] == 0 and n["l0"][4] == 0


def test_make_result_clips_detaches_and_is_frozen():
    x = torch.full((2, 1, 2, 2), 0.5)
    x_adv = (x + torch.tensor([0.7, -0.2]).view(2, 1, 1, 1)).requires_grad_(True)
    r = make_result(x, x_adv, torch.tensor([1, 0]), torch.tensor([3, 3]), torch.tensor([2, 2]), iterations=torch.tensor([1, 1]))
    assert isinstance(r, AttackResult) and len(r) == 2
    assert not r.x_adv.requires_grad
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.success.dtype == torch.bool and r.success.tolist() == [True, False]
    assert r.counts["forward"].dtype == torch.int64 and r.counts["backward"].dtype == torch.int64
    torch.testing.assert_close(r.norms["linf"], torch.tensor([0.5, 0.2]))
    assert "iterations" in r.extra
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.success = None


X = torch.full((3, 1, 4, 4), 0.5)
Y = torch.tensor([0, 1, 2])


@pytest.mark.faults_bad_input
@pytest.mark.parametrize(
    "x, y, target, match",
    [
        (torch.empty(0, 1, 4, 4), None, None, "empty"),
        (X.view(3, 16), None, None, "4-D"),
        (X[0], None, None, "4-D"),
        (X.clone().index_fill_(0, torch.tensor([1]), float("nan")), None, None, "NaN"),
        (X.clone().index_fill_(0, torch.tensor([1]), float("inf")), None, None, "NaN or inf"),
        (X + 0.6, None, None, r"\[0, 1\]"),
        (X - 0.6, None, None, r"\[0, 1\]"),
        ((X * 255).to(torch.uint8), None, None, "floating point"),
        (X, Y[:2], None, "y has 2 entries"),
        (X, Y.float(), None, "integer"),
        (X, Y.view(3, 1), None, "1-D"),
        (X, Y, torch.tensor([1, 2]), "target has 2 entries"),
        (X, Y, torch.tensor([1, 1, 0]), "target equals the label"),
        (X, torch.tensor([0, -1, 2]), None, "negative"),
    ],
)
def test_check_inputs_rejects(x, y, target, match):
    with pytest.raises(ValueError, match=match):
        check_inputs(x, y, target)


def test_check_inputs_accepts_valid():
    check_inputs(X, Y, torch.tensor([1, 2, 0]))
    check_inputs(torch.zeros(1, 3, 2, 2, dtype=torch.float64))
