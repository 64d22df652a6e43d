"""The one-pixel paper's VGG-16 (``vgg16`` in the model registry)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.models import MODEL_NAMES, build_model, load_checkpoint, save_checkpoint
from advlab.models.architectures import VGG16_BLOCKS


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _x(c: int, s: int, n: int = 3) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(0))


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def test_registered():
    assert "vgg16" in MODEL_NAMES


@pytest.mark.parametrize("c, s", [(3, 32), (1, 28), (3, 28), (1, 32)])
def test_builds_and_returns_logits(c: int, s: int):
    model = build_model("vgg16", in_channels=c, image_size=s, init_seed=0).eval()
    out = model(_x(c, s))
    assert out.shape == (3, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert model.input_shape == (c, s, s)
    # one gradient step works (the pooling stack leaves a usable map at both sizes)
    model.train()
    nn.functional.cross_entropy(model(_x(c, s)), torch.tensor([0, 1, 2])).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_layout_is_vgg16_at_paper_and_default_width():
    paper = build_model("vgg16", in_channels=3, image_size=32, width=1.0)
    convs = _convs(paper)
    assert [m.out_channels for m in convs] == [c for block in VGG16_BLOCKS for c in block]
    assert len(convs) == 13 and all(m.kernel_size == (3, 3) and m.padding == (1, 1) for m in convs)
    assert sum(isinstance(m, nn.MaxPool2d) for m in paper.modules()) == 5
    assert [m.out_features for m in paper.modules() if isinstance(m, nn.Linear)] == [2048, 2048, 10]
    small = build_model("vgg16", in_channels=3, image_size=32)
    assert small.arch_kwargs["width"] == 0.25
    assert [m.out_channels for m in _convs(small)] == [c // 4 for block in VGG16_BLOCKS for c in block]
    assert [m.out_features for m in small.modules() if isinstance(m, nn.Linear)] == [512, 512, 10]


def test_batch_norm_and_dropout_options():
    plain = build_model("vgg16", in_channels=3, image_size=32, batch_norm=False, dropout=0.0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in plain.modules())
    bn = build_model("vgg16", in_channels=3, image_size=32)
    norms = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 13
    # building probes the shape in eval mode: the running statistics are untouched
    assert all(torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in norms)
    assert all(torch.equal(m.running_var, torch.ones_like(m.running_var)) for m in norms)
    assert bn.training
    with pytest.raises(ValueError, match="width"):
        build_model("vgg16", in_channels=3, image_size=32, width=0)


def test_checkpoint_round_trip(tmp_path: Path):
    model = build_model("vgg16", in_channels=3, image_size=32, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26],
                        width=0.125, init_seed=0)
    # non-trivial BatchNorm statistics must survive the round trip too
    model.train()
    with torch.no_grad():
        model(_x(3, 32, n=8))
    model.eval()
    path = save_checkpoint(tmp_path / "vgg16.pt", model, {"dataset": "cifar10", "test_acc": 0.5})
    loaded, meta = load_checkpoint(path)
    assert meta == {"dataset": "cifar10", "test_acc": 0.5} and loaded.arch == "vgg16"
    assert loaded.arch_kwargs == model.arch_kwargs and loaded.arch_kwargs["width"] == 0.125
    x = _x(3, 32)
    assert torch.equal(loaded(x), model(x))
