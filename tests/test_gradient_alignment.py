"""Input gradients along PGD trajectories and their cosines (the UAPs-and-adversarial-training study)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.analysis import alignment, pgd_gradients


def _linear(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()


def test_shapes_start_and_determinism():
    model = _linear()
    x = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 0, 1])
    g = pgd_gradients(model, x, y, eps=0.1, steps=4, step_size=0.03)
    assert g.shape == (5, 5, 16) and g.dtype == torch.float32
    # step 0 is the gradient at the clean input
    x0 = x.clone().requires_grad_(True)
    nn.functional.cross_entropy(model(x0), y, reduction="sum").backward()
    torch.testing.assert_close(g[0], x0.grad.flatten(1))
    torch.testing.assert_close(g, pgd_gradients(model, x, y, eps=0.1, steps=4, step_size=0.03))
    g2 = pgd_gradients(model, x, y, eps=0.5, steps=2, step_size=0.1, norm="l2", random_start=True,
                       generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert g2.shape == (3, 5, 16)


def test_alignment_of_known_gradients():
    d = torch.tensor([1.0, 0.0, 0.0])
    # image 0 always points along d; image 1 turns from -d to d; their final mean is d
    grads = torch.stack([torch.stack([d, -d]), torch.stack([d, torch.tensor([0.0, 1.0, 0.0])]), torch.stack([d, d])])
    cos = alignment(grads)
    assert cos["to_mean_final"].shape == (3, 2)
    torch.testing.assert_close(cos["to_mean_final"][:, 0], torch.ones(3))
    torch.testing.assert_close(cos["to_mean_final"][:, 1], torch.tensor([-1.0, 0.0, 1.0]))
    torch.testing.assert_close(cos["to_own_final"][-1], torch.ones(2))  # the last step is its own final gradient
    torch.testing.assert_close(cos["to_own_final"][0], torch.tensor([1.0, -1.0]))


def test_a_linear_model_has_one_gradient_direction_per_class_pair():
    # with two classes the input gradient of a linear model is +-(w1 - w0) everywhere: |cos| = 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 2)).eval()
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(2)) * 0.5 + 0.25
    y = torch.zeros(6, dtype=torch.long)
    cos = alignment(pgd_gradients(model, x, y, eps=0.05, steps=3, step_size=0.01))
    torch.testing.assert_close(cos["to_mean_final"].abs(), torch.ones(4, 6), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kw, match", [(dict(norm="l1"), "norm"), (dict(steps=0), "steps"), (dict(eps=0.0), "eps")])
def test_bad_parameters_raise(kw, match):
    args = dict(eps=0.1, steps=2, step_size=0.01)
    with pytest.raises(ValueError, match=match):
        pgd_gradients(_linear(), torch.rand(2, 1, 4, 4), torch.tensor([0, 1]), **{**args, **kw})
    with pytest.raises(ValueError, match="grads"):
        alignment(torch.zeros(3, 4))


def test_alignment_to_the_class_average():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # two classes with orthogonal final gradients: over all images the mean is diagonal (cos 0.71),
    # per class each image meets its own class's direction (cos 1)
    grads = torch.stack([a, a, b, b]).unsqueeze(0)  # one step, four images
    labels = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(alignment(grads, labels)["to_mean_final"], torch.ones(1, 4))
    torch.testing.assert_close(alignment(grads)["to_mean_final"], torch.full((1, 4), 2**-0.5))
    with pytest.raises(ValueError, match="labels"):
        alignment(grads, torch.tensor([0, 1]))
