"""LocalForward: logits of one-pixel variants from cached activations must equal the full
forward pass on the changed image, for every layer kind and every pixel position."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.models import build_model
from advlab.models.layers import GlobalAvgPool
from advlab.models.local_forward import LocalForward, supports

pytestmark = pytest.mark.usefixtures("one_thread")


def _randomise_batch_norm(model: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
    return model


def _pooling_zoo(channels: int) -> nn.Sequential:
    """Every padding / ceil-mode / divisor case of the pools, strides unequal to kernels."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(channels, 6, 3, padding=2), nn.LeakyReLU(0.1),
        nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True),
        nn.Conv2d(6, 6, 3, stride=2, padding=1, groups=2), nn.Tanh(),
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(6, 8, 1), nn.ELU(),
        nn.AvgPool2d(2, stride=1, padding=1, count_include_pad=True),
        nn.AvgPool2d(2, divisor_override=3),
        nn.Conv2d(8, 10, 1), GlobalAvgPool(),
    ).eval()  # fmt: skip


def _models():
    yield "allconv", _randomise_batch_norm(
        build_model("allconv", in_channels=3, image_size=32, num_classes=10, init_seed=0, widths=[8, 16],
                    batch_norm=True, mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])).eval()  # fmt: skip
    yield "nin", build_model("nin", in_channels=3, image_size=32, num_classes=10, init_seed=0, widths=[16, 12, 8]).eval()
    yield "vgg16", _randomise_batch_norm(
        build_model("vgg16", in_channels=3, image_size=32, num_classes=10, init_seed=0, width=0.125)).eval()
    yield "lenet", build_model("lenet", in_channels=1, image_size=28, num_classes=10, init_seed=0).eval()
    yield "pooling zoo", _pooling_zoo(3)


@pytest.mark.parametrize("name, model", list(_models()), ids=lambda v: v if isinstance(v, str) else "")
def test_logits_equal_the_full_forward_at_every_border_and_inside(name, model):
    c, h, w = (1, 28, 28) if name == "lenet" else (3, 32, 32)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(5, c, h, w, generator=g)
    local = LocalForward(model, x, chunk=2)  # several cache chunks
    assert any(kind == "local" for kind, _ in local.steps)
    # corners, edges and random inside positions, on every image
    rows = torch.tensor([0, 0, h - 1, h - 1, 1, h - 2] + torch.randint(0, h, (10,), generator=g).tolist())
    cols = torch.tensor([0, w - 1, 0, w - 1, w - 2, 1] + torch.randint(0, w, (10,), generator=g).tolist())
    img = torch.arange(5).repeat_interleave(len(rows))
    row, col = rows.repeat(5), cols.repeat(5)
    values = torch.rand(len(img), c, generator=g)
    values[::3] = torch.tensor([0.0, 1.0, 0.0][:c])  # extremes as well
    changed = x[img].clone()
    changed[torch.arange(len(img)), :, row, col] = values
    with torch.no_grad():
        expected = model(changed)
    got = local(img, row, col, values)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_unchanged_pixel_gives_the_clean_logits():
    model = _pooling_zoo(3)
    x = torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(2))
    local = LocalForward(model, x)
    img, row, col = torch.tensor([0, 1, 2]), torch.tensor([0, 7, 19]), torch.tensor([19, 3, 0])
    with torch.no_grad():
        torch.testing.assert_close(local(img, row, col, x[img, :, row, col]), model(x), rtol=1e-5, atol=1e-6)


def test_supports():
    model = build_model("allconv", in_channels=3, image_size=32, num_classes=10, init_seed=0, widths=[8, 16])
    assert not supports(model.train())  # batch norm / dropout statistics would differ
    assert supports(model.eval())
    assert not supports(nn.Sequential(nn.Flatten(), nn.Linear(12, 2)).eval())  # nothing local to save

    class Residual(nn.Module):
        def forward(self, x):
            return x + 1

    assert not supports(Residual())
    with pytest.raises(ValueError, match="LocalForward needs"):
        LocalForward(model.train(), torch.rand(2, 3, 32, 32))


def test_model_without_a_local_tail_still_runs():
    """A net that ends in local layers only (no flatten / linear) has an empty remainder."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3)).eval()
    x = torch.rand(2, 1, 30, 30)
    local = LocalForward(model, x)
    changed = x.clone()
    changed[1, 0, 4, 9] = 0.7
    with torch.no_grad():
        torch.testing.assert_close(local(torch.tensor([1]), torch.tensor([4]), torch.tensor([9]), torch.tensor([[0.7]])),
                                   model(changed[1:]))  # fmt: skip
