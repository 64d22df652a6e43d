"""On a GPU box: the attacks and training run on CUDA and agree with the CPU."""
from __future__ import annotations

import pytest
import torch

from advlab.attacks import deepfool, pgd
from advlab.data import load_dataset
from advlab.models import build_model
from advlab.training import ArrayDataModule, fit_classifier

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def small():
    ds = load_dataset("mnist5k", n_train=600, n_test=100, seed=0)
    return ds


def test_training_uses_the_gpu_and_learns(small, tmp_path):
    model = build_model("lenet", in_channels=1, image_size=28, num_classes=10, init_seed=0)
    dm = ArrayDataModule(small.x_train, small.y_train, val_fraction=0.1, batch_size=64, seed=0)
    result = fit_classifier(model, dm, epochs=2, lr=1e-3, optimizer="adam", seed=0, accelerator="gpu",
                            log_dir=tmp_path)
    assert result.best_val_acc > 0.5


def test_attacks_on_cuda_match_cpu(small):
    model = build_model("fc100_100", in_channels=1, image_size=28, num_classes=10, init_seed=0).eval()
    x, y = small.x_test[:32], small.y_test[:32]
    cpu = deepfool(model, x, y, norm="l2")
    gpu = deepfool(model.cuda(), x.cuda(), y.cuda(), norm="l2")
    assert torch.equal(cpu.success, gpu.success.cpu())
    assert torch.allclose(cpu.norms["l2"], gpu.norms["l2"].cpu(), rtol=1e-3, atol=1e-4)
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    a = pgd(model.cpu(), x, y, 0.3, generator=gen())
    b = pgd(model.cuda(), x.cuda(), y.cuda(), 0.3, generator=gen())
    # same random start (drawn on the CPU generator); sign steps may part at exact ties only
    assert (a.x_adv - b.x_adv.cpu()).abs().mean() < 1e-3
    assert (a.success == b.success.cpu()).float().mean() >= 0.9


def test_cw_l2_on_cuda_loses_no_point_at_the_boundary(small, tmp_path):
    """C&W leaves points just past the decision boundary; with cuDNN's TF32 (PyTorch's default, which
    importing advlab turns off) a third of them flipped back when judged again on an H200."""
    from advlab.attacks import cw_l2

    assert not torch.backends.cudnn.allow_tf32
    model = build_model("lenet", in_channels=1, image_size=28, num_classes=10, init_seed=0)
    dm = ArrayDataModule(small.x_train, small.y_train, val_fraction=0.1, batch_size=64, seed=0)
    fit_classifier(model, dm, epochs=2, lr=1e-3, optimizer="adam", seed=0, accelerator="gpu", log_dir=tmp_path)
    model = model.cuda().eval()
    res = cw_l2(model, small.x_test[:64].cuda(), small.y_test[:64].cuda(), binary_search_steps=6, max_iter=300)
    assert bool(res.success.all())


def test_generative_defenses_run_on_cuda_and_agree_with_cpu(small):
    """PixelDefend's incremental purification on CUDA is a greedy purification of the same model:
    every pixel takes a level whose logit, in one full pass over the purified image, is the largest in
    its ball up to float noise (pixel for pixel equality with the CPU cannot hold: an untrained net's
    near-ties break differently, and each choice conditions the later ones). Defense-GAN's projection
    and tangent projection agree with the CPU."""
    from advlab.defenses.defensegan import DCGANGenerator, project, tangent_projection
    from advlab.defenses.pixeldefend import GatedPixelCNN, pixeldefend
    from tests.test_pixeldefend import greedy_gap

    torch.manual_seed(0)
    net = GatedPixelCNN(channels=16, layers=3, kernel=5).eval()
    x = small.x_test[:16]
    gpu = pixeldefend(net.cuda(), x.cuda(), eps_levels=32)
    assert greedy_gap(net.cuda(), x.cuda(), gpu, 32) < 1e-3
    g = DCGANGenerator(z_dim=8, width=8).eval()
    a, za = project(g, x, restarts=2, steps=20, seed=0)
    b, zb = project(g.cuda(), x.cuda(), restarts=2, steps=20, seed=0)
    assert (a - b.cpu()).abs().max() < 1e-3
    grad = torch.randn(16, 1, 28, 28)
    t_cpu = tangent_projection(g.cpu(), za, grad)
    t_gpu = tangent_projection(g.cuda(), za.cuda(), grad.cuda()).cpu()
    torch.testing.assert_close(t_cpu, t_gpu, rtol=1e-3, atol=1e-4)
