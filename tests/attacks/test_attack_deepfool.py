import math

import pytest
import torch
from torch import nn

from advlab.attacks import deepfool

OVERSHOOT = 0.02


def affine_model(n_classes: int, dim: int = 16, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A float64 affine classifier and a point x0 (middle of the box) where the
    logits are f(x0) = offsets: small gaps, so the minimal perturbation stays in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(dim, n_classes).double()
    x0 = torch.full((1, 1, 4, dim // 4), 0.5, dtype=torch.float64)
    offsets = torch.linspace(0.1, -0.1, n_classes, dtype=torch.float64)[torch.randperm(n_classes, generator=g)]
    with torch.no_grad():
        lin.weight.copy_(0.3 * torch.randn(n_classes, dim, generator=g, dtype=torch.float64))
        lin.bias.copy_(offsets - lin.weight @ x0.flatten())
    return nn.Sequential(nn.Flatten(), lin).eval(), x0


def closed_form(model: nn.Module, x0: torch.Tensor, p: float, candidates: int = 10) -> torch.Tensor:
    """Seed paper's minimal lp perturbation of an affine classifier, as a flat vector:
    l = argmin_k |f'_k| / ||w'_k||_q and r* = |f'_l| / ||w'_l||_q^q * |w'_l|^(q-1) sign(w'_l)
    (p = 2: |f'|/||w'||^2 w'; p = inf: |f'|/||w'||_1 sign(w'); p = 1: all on argmax |w'|)."""
    W = model[1].weight.detach()
    f = model(x0).detach()[0]
    order = torch.argsort(f, descending=True)[:candidates]
    o, ks = order[0], order[1:]
    wd, fd = W[ks] - W[o], (f[ks] - f[o]).abs()
    if math.isinf(p):
        dist = fd / wd.abs().sum(1)
    elif p == 1:
        dist = fd / wd.abs().amax(1)
    else:
        q = p / (p - 1)
        dist = fd / wd.norm(p=q, dim=1)
    l = int(dist.argmin())
    w, fl = wd[l], fd[l]
    if math.isinf(p):
        return fl / w.abs().sum() * w.sign()
    if p == 1:
        j = int(w.abs().argmax())
        r = torch.zeros_like(w)
        r[j] = fl / w[j]
        return r
    q = p / (p - 1)
    return fl / w.norm(p=q) ** q * w.abs() ** (q - 1) * w.sign()


def lp(v: torch.Tensor, p: float) -> float:
    return float(v.abs().max()) if math.isinf(p) else float(v.abs().pow(p).sum() ** (1 / p))


@pytest.mark.parametrize("norm, p", [("l2", 2.0), ("linf", math.inf), (3, 3.0), (1.5, 1.5), ("l1", 1.0)])
@pytest.mark.parametrize("n_classes", [10, 4, 2])
def test_affine_closed_form_in_one_iteration(norm, p, n_classes):
    model, x0 = affine_model(n_classes, seed=n_classes)
    r_star = closed_form(model, x0, p)
    assert ((x0.flatten() + 1.02 * r_star - 0.5).abs() < 0.5).all(), "test setup: r* must stay inside [0, 1]"
    res = deepfool(model, x0, norm=norm, overshoot=OVERSHOOT)
    r = (res.x_adv - x0).flatten()
    # LTS4 adds 1e-4 (in the lp norm) to each step; that is the only gap to the closed form
    assert lp(r - (1 + OVERSHOOT) * r_star, p) == pytest.approx((1 + OVERSHOOT) * 1e-4, rel=1e-6, abs=1e-12)
    torch.testing.assert_close(r, (1 + OVERSHOOT) * r_star, atol=2e-4, rtol=0)
    torch.testing.assert_close(res.extra["raw"], res.x_adv)
    assert res.extra["iterations"].item() == 1
    assert res.counts["forward"].item() == 2 and res.counts["backward"].item() == n_classes - 1
    assert res.success.item()


def test_affine_candidates_restrict_the_classes():
    model, x0 = affine_model(10, seed=3)
    for k in (2, 5):
        res = deepfool(model, x0, norm="l2", candidates=k)
        torch.testing.assert_close((res.x_adv - x0).flatten(), 1.02 * closed_form(model, x0, 2.0, k), atol=2e-4, rtol=0)
        assert res.counts["backward"].item() == k - 1


def test_affine_batch_of_points():
    model, x0 = affine_model(6, seed=5)
    g = torch.Generator().manual_seed(0)
    xs = (x0 + 0.02 * torch.randn(5, *x0.shape[1:], generator=g, dtype=torch.float64)).clamp(0, 1)
    res = deepfool(model, xs, norm="linf")
    for i in range(5):
        expected = xs[i].flatten() + 1.02 * closed_form(model, xs[i : i + 1], math.inf)
        torch.testing.assert_close(res.x_adv[i].flatten(), expected, atol=2e-4, rtol=0)


@pytest.mark.parametrize("fixture", ["cnn", "mlp"])
@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fools_every_correctly_classified_point(fixture, norm, request):
    t = request.getfixturevalue(fixture)
    res = deepfool(t.model, t.x, t.y, norm=norm)
    assert res.success[t.correct].all()
    assert res.extra["fooled"].all()
    it = res.extra["iterations"]
    assert (it >= 1).all() and (it < 50).all()
    # finished points are frozen: one evaluation per step plus the first, K-1 VJPs per step
    assert torch.equal(res.counts["forward"], it + 1)
    assert torch.equal(res.counts["backward"], 9 * it)
    torch.testing.assert_close(res.extra["raw"].clamp(0, 1), res.x_adv)
    with torch.no_grad():
        pred = t.model(res.x_adv).argmax(1)
    assert (pred != res.extra["orig_pred"]).all()


def test_y_only_sets_the_success_flag(cnn):
    assert (~cnn.correct).any(), "fixture should misclassify a few points"
    with_y = deepfool(cnn.model, cnn.x, cnn.y)
    without = deepfool(cnn.model, cnn.x)
    assert torch.equal(with_y.x_adv, without.x_adv)  # y never steers the attack
    assert torch.equal(without.success, without.extra["fooled"])
    with torch.no_grad():
        pred = cnn.model(with_y.x_adv).argmax(1)
    assert torch.equal(with_y.success, pred != cnn.y)
    assert torch.equal(with_y.success[cnn.correct], without.success[cnn.correct])


def test_lts4_unclipped_iterates(mlp):
    res = deepfool(mlp.model, mlp.x, norm="l2", clip_iterates=False)
    assert res.extra["raw_fooled"].all()
    assert res.extra["raw"].min() < 0  # the unclipped steps leave the box on MNIST
    torch.testing.assert_close(res.extra["raw"].clamp(0, 1), res.x_adv)
    with torch.no_grad():
        pred = mlp.model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != res.extra["orig_pred"])
    assert torch.equal(res.counts["forward"], res.extra["iterations"] + 2)


@pytest.mark.parametrize("norm", [1, 3, "l1"])
def test_other_norms_on_mnist(norm, mlp):
    res = deepfool(mlp.model, mlp.x[:16], norm=norm, max_iter=20)
    assert torch.isfinite(res.extra["raw"]).all()
    assert torch.isfinite(res.extra["lp"]).all()
    assert res.success.any()


def test_flat_model_does_not_move_or_nan():
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0, -1.0]))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    res = deepfool(model, x, norm="l2", max_iter=7)
    assert torch.equal(res.x_adv, x) and not res.success.any()
    assert (res.extra["iterations"] == 7).all() and (res.counts["forward"] == 8).all()


def test_max_iter_zero_returns_x(cnn):
    res = deepfool(cnn.model, cnn.x[:4], cnn.y[:4], max_iter=0)
    assert torch.equal(res.x_adv, cnn.x[:4])
    assert (res.counts["backward"] == 0).all()


def _foolbox_vs_ours(t, n_points, fb_attack, norm):
    fb = pytest.importorskip("foolbox")
    x, y = t.x[t.correct][:n_points], t.y[t.correct][:n_points]
    fmodel = fb.PyTorchModel(t.model, bounds=(0, 1))
    attack = getattr(fb.attacks, fb_attack)(steps=50, candidates=10, overshoot=0.02, loss="logits")
    _, clipped, fb_success = attack(fmodel, x, y, epsilons=None)
    ours = deepfool(t.model, x, y, norm=norm, overshoot=0.02, max_iter=50, candidates=10)
    d = (clipped - x).flatten(1)
    fb_norm = d.norm(dim=1) if norm == "l2" else d.abs().amax(1)
    assert fb_success.all() and ours.success.all()
    assert float(ours.norms[norm].median()) <= 1.03 * float(fb_norm.median())
    # same algorithm on the same path: the points themselves agree
    same = ((ours.x_adv - clipped).abs().flatten(1) <= 1e-4).all(1)
    assert same.float().mean() >= 0.95


@pytest.mark.parametrize("fb_attack, norm", [("L2DeepFoolAttack", "l2"), ("LinfDeepFoolAttack", "linf")])
def test_against_foolbox_mlp(fb_attack, norm, mlp):
    _foolbox_vs_ours(mlp, 128, fb_attack, norm)


@pytest.mark.parametrize("fb_attack, norm", [("L2DeepFoolAttack", "l2"), ("LinfDeepFoolAttack", "linf")])
def test_against_foolbox_cnn(fb_attack, norm, cnn):
    _foolbox_vs_ours(cnn, 64, fb_attack, norm)


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_box_aware_is_plain_deepfool_inside_the_box(norm):
    # no coordinate on a bound: nothing is dropped, the same closed-form step
    model, x0 = affine_model(10, seed=3)
    plain = deepfool(model, x0, norm=norm)
    boxed = deepfool(model, x0, norm=norm, box_aware=True)
    torch.testing.assert_close(boxed.x_adv, plain.x_adv)


def test_box_aware_steps_only_where_the_pixel_can_move():
    # a two-class affine model on 4 pixels: pixel 0 sits at 0 and the boundary lies "below" it
    lin = nn.Linear(4, 2).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, 0.5, 0.0, 0.0], [-1.0, -0.5, 0.0, 0.0]], dtype=torch.float64))
        lin.bias.copy_(torch.tensor([0.0, 0.2], dtype=torch.float64))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = torch.tensor([[[[0.0, 0.9, 0.5, 0.5]]]], dtype=torch.float64)  # logits 0.45 vs -0.25: class 0
    plain = deepfool(model, x, max_iter=50)
    boxed = deepfool(model, x, max_iter=50, box_aware=True)
    assert plain.success.item() and boxed.success.item()
    # plain DeepFool spends most of each step on pixel 0, which the clip pins at 0: more steps
    assert boxed.extra["iterations"].item() == 1 < plain.extra["iterations"].item()
    step = (boxed.x_adv - x).flatten()
    assert step[0] == 0 and step[1] < 0 and bool((step[2:] == 0).all())


def test_box_aware_on_mnist_needs_fewer_steps_at_a_similar_norm(cnn):
    x = cnn.x[:64]
    plain = deepfool(cnn.model, x, max_iter=50)
    boxed = deepfool(cnn.model, x, max_iter=50, box_aware=True)
    assert bool(boxed.success.all()) and bool(((boxed.x_adv >= 0) & (boxed.x_adv <= 1)).all())
    assert boxed.extra["iterations"].float().mean() < plain.extra["iterations"].float().mean()
    l2 = lambda r: (r.x_adv - x).flatten(1).norm(dim=1)[r.success].median()  # noqa: E731
    assert float(l2(boxed)) < 1.25 * float(l2(plain))
