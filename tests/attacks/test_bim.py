"""BIM and iterative least-likely class (Kurakin et al. 2016): step count, clipping,
the least-likely class taken from the clean image, and torchattacks' BIM as reference."""

import pytest
import torch

from advlab.attacks.bim import bim, illc, kurakin_steps, least_likely_class


@pytest.mark.parametrize(
    "eps255, expected",
    # N = min(eps + 4, 1.25 eps) in 0-255 units, rounded down
    [(1, 1), (2, 2), (4, 5), (8, 10), (16, 20), (32, 36), (64, 68)],
)
def test_kurakin_steps(eps255, expected):
    assert kurakin_steps(eps255 / 255) == expected


def test_kurakin_steps_zero_and_bad():
    assert kurakin_steps(0.0) == 0
    with pytest.raises(ValueError, match="eps"):
        kurakin_steps(-0.1)


@pytest.mark.parametrize("fixture", ["cnn", "mlp"])
def test_bim_matches_torchattacks(fixture, request):
    torchattacks = pytest.importorskip("torchattacks")
    t = request.getfixturevalue(fixture)
    eps = 16 / 255
    ours = bim(t.model, t.x, t.y, eps)
    ref = torchattacks.BIM(t.model, eps=eps, alpha=1 / 255, steps=0)(t.x, t.y)  # steps=0: Kurakin's count
    assert ours.extra["steps"] == 20
    # sign ties of vanishing gradients may differ on a point or two
    differ = ((ours.x_adv - ref).abs().flatten(1) > 1e-5).any(1)
    assert int(differ.sum()) <= 2


def test_illc_matches_torchattacks_least_likely(cnn):
    torchattacks = pytest.importorskip("torchattacks")
    eps = 16 / 255
    ours = illc(cnn.model, cnn.x, cnn.y, eps)
    atk = torchattacks.BIM(cnn.model, eps=eps, alpha=1 / 255, steps=0)
    atk.set_mode_targeted_least_likely(kth_min=1, quiet=True)
    ref = atk(cnn.x, cnn.y)
    differ = ((ours.x_adv - ref).abs().flatten(1) > 1e-5).any(1)
    assert int(differ.sum()) <= 2


@pytest.mark.parametrize("attack", [bim, illc])
def test_eps_ball_box_and_success_flags(attack, cnn):
    eps = 8 / 255
    r = attack(cnn.model, cnn.x, cnn.y, eps)
    assert (r.norms["linf"] <= eps + 1e-6).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    with torch.no_grad():
        pred = cnn.model(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred != cnn.y)
    # signed steps of 1/255 from a [0,1] image land on the grid x + k/255
    k = (r.x_adv - cnn.x) * 255
    inside = (r.x_adv > 0) & (r.x_adv < 1)
    assert torch.allclose(k[inside], k[inside].round(), atol=1e-3)
    assert (r.counts["backward"] == r.extra["steps"]).all()


def test_illc_target_is_least_likely_on_clean_image(cnn):
    r = illc(cnn.model, cnn.x, cnn.y, 0.5)  # Kurakin: 131 steps of 1/255
    assert torch.equal(r.extra["target"], least_likely_class(cnn.model, cnn.x))
    with torch.no_grad():
        pred = cnn.model(r.x_adv).argmax(1)
    assert torch.equal(r.extra["target_reached"], pred == r.extra["target"])
    # at eps 0.5 the least-likely class is reached for most points (measured 90%; 40% at 0.3)
    assert r.extra["target_reached"].float().mean() > 0.5
    assert r.success.float().mean() >= r.extra["target_reached"].float().mean()


def test_stronger_with_eps(mlp):
    rates = [bim(mlp.model, mlp.x, mlp.y, e / 255).success[mlp.correct].float().mean() for e in (2, 8, 32)]
    assert rates[0] <= rates[1] <= rates[2]
    assert rates[2] > 0.5


def test_targeted_bim_reaches_target(cnn):
    target = (cnn.y + 3) % 10
    r = bim(cnn.model, cnn.x, cnn.y, 0.3, steps=40, step_size=0.01, target=target)
    with torch.no_grad():
        assert torch.equal(r.success, cnn.model(r.x_adv).argmax(1) == target)
    assert r.success.float().mean() > 0.5


@pytest.mark.parametrize("attack", [bim, illc])
def test_invariants(attack, cnn):
    x, y = cnn.x[:8], cnn.y[:8]
    x0, y0 = x.clone(), y.clone()
    a = attack(cnn.model, x, y, 8 / 255)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    b = attack(cnn.model, x, y, 8 / 255)
    assert torch.equal(a.x_adv, b.x_adv)
    for i in range(len(x)):
        one = attack(cnn.model, x[i:i + 1], y[i:i + 1], 8 / 255)
        torch.testing.assert_close(one.x_adv, a.x_adv[i:i + 1], atol=1e-5, rtol=0)
    zero = attack(cnn.model, x, y, 0.0)
    assert torch.equal(zero.x_adv, x)


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(eps=-1.0), "eps"), (dict(eps=0.1, step_size=0.0), "step_size"),
     (dict(eps=0.1, steps=-2), "steps"), (dict(eps=0.1, steps=1.5), "steps")],
)
@pytest.mark.parametrize("attack", [bim, illc])
def test_bad_parameters(attack, kwargs, match, cnn):
    with pytest.raises(ValueError, match=match):
        attack(cnn.model, cnn.x[:2], cnn.y[:2], **kwargs)


def test_illc_when_least_likely_is_the_label():
    # a model that rates class 0 lowest everywhere, asked about points labelled 0
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[1].fill_(1.0)
        model[1].bias.copy_(torch.tensor([-5.0, 0.0, 0.0]))
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.zeros(2, dtype=torch.int64)
    r = illc(model, x, y, 0.1)
    assert (r.extra["target"] == 0).all()
    assert r.x_adv.shape == x.shape
