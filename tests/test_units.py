"""advlab.analysis.units: hidden-layer activations, random directions, top images, purity."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advlab.analysis import label_purity, layer_activations, layer_names, random_directions, top_activating
from advlab.models import build_model

pytestmark = pytest.mark.usefixtures("one_thread")


def _x(n: int = 50, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def _fc(**kw):
    return build_model("fc100_100", in_channels=1, image_size=28, init_seed=0, mean=0.13, std=0.31, **kw)


def test_layer_activations_are_the_layer_outputs_of_the_normalised_input():
    model = _fc().train()
    x = _x()
    x0 = x.clone()
    acts = layer_activations(model, x, "relu1", batch_size=7)
    assert acts.shape == (50, 100) and acts.dtype == torch.float32 and (acts >= 0).all()
    with torch.no_grad():
        expected = model.net.relu1(model.net.fc1(model.net.flatten(model.normalize(x))))
    torch.testing.assert_close(acts, expected)
    torch.testing.assert_close(layer_activations(model, x, "relu1"), acts)  # batching does not matter
    assert model.training and torch.equal(x, x0)  # mode restored, input untouched
    assert layer_activations(model, x, "fc3").shape == (50, 10)  # the logits layer works too
    # Convolutional layers are flattened per image.
    lenet = build_model("lenet", in_channels=1, image_size=28, init_seed=0)
    assert layer_activations(lenet, x[:3], "conv1").shape == (3, 20 * 24 * 24)
    ae = build_model("ae400_10", in_channels=1, image_size=28, init_seed=0)
    code = layer_activations(ae, x[:3], "sigmoid")
    assert code.shape == (3, 400) and ((code > 0) & (code < 1)).all()


def test_unknown_layer_lists_the_available_ones():
    model = _fc()
    assert layer_names(model) == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]
    with pytest.raises(ValueError, match="no layer 'relu9'") as info:
        layer_activations(model, _x(4), "relu9")
    assert "fc1, relu1, fc2, relu2, fc3" in str(info.value)
    with pytest.raises(ValueError, match="no layer ''"):
        layer_activations(model, _x(4), "")


def test_random_directions_are_unit_norm_and_seeded():
    d = random_directions(100, 12, generator=torch.Generator().manual_seed(0))
    assert d.shape == (12, 100) and d.dtype == torch.float32
    torch.testing.assert_close(d.norm(dim=1), torch.ones(12))
    assert torch.equal(d, random_directions(100, 12, generator=torch.Generator().manual_seed(0)))
    assert not torch.equal(d, random_directions(100, 12, generator=torch.Generator().manual_seed(1)))
    # Not concentrated on a few axes: a random direction is far from every unit.
    assert float(d.abs().max()) < 0.6


def test_top_activating_shapes_order_and_units():
    acts = layer_activations(_fc(), _x(200), "relu1")
    dirs = random_directions(100, 5, generator=torch.Generator().manual_seed(0))
    top = top_activating(acts, dirs, 8)
    assert top.shape == (5, 8) and top.dtype == torch.int64
    proj = acts @ dirs.T
    for j in range(5):
        values = proj[top[j], j]
        assert (values[:-1] >= values[1:]).all()  # largest first
        assert float(values[-1]) >= float(proj[:, j].sort(descending=True).values[7])
        assert len(set(top[j].tolist())) == 8
    # A direction equal to e_i gives unit i's top images (ties by lower index).
    units = [0, 3, 17, 99]
    by_unit = top_activating(acts, torch.eye(100)[units], 8)
    for row, i in zip(by_unit, units):
        assert row.tolist() == torch.sort(acts[:, i], descending=True, stable=True).indices[:8].tolist()
    assert torch.equal(top_activating(acts, dirs, 8), top)  # deterministic
    with pytest.raises(ValueError, match="agree in D"):
        top_activating(acts, torch.eye(99), 3)
    with pytest.raises(ValueError, match="k must be"):
        top_activating(acts, dirs, 201)


def test_top_activating_breaks_ties_by_index():
    acts = torch.zeros(6, 3)  # e.g. a dead ReLU unit: every projection ties
    acts[4, 1] = 1.0
    top = top_activating(acts, torch.eye(3), 3)
    assert top.tolist() == [[0, 1, 2], [4, 0, 1], [0, 1, 2]]


def test_label_purity():
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 3])
    top = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 8], [0, 2, 5, 9]])
    torch.testing.assert_close(label_purity(labels, top), torch.tensor([0.5, 1.0, 0.25]))
    # Activations that are the one-hot label: each class direction picks only its class.
    y = torch.arange(100) % 10
    acts = F.one_hot(y, 10).float() + 0.01 * torch.rand(100, 10, generator=torch.Generator().manual_seed(0))
    assert label_purity(y, top_activating(acts, torch.eye(10), 10)).eq(1.0).all()
    with pytest.raises(ValueError, match="class indices"):
        label_purity(labels.float(), top)
