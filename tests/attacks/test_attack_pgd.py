import math

import pytest
import torch

from advlab.attacks import pgd
from advlab.attacks.pgd import attack_objective


def _mismatch_points(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> int:
    """Points whose x_adv differs anywhere by more than atol (sign ties of tiny gradients)."""
    return int(((a - b).abs().flatten(1) > atol).any(1).sum())


@pytest.mark.parametrize("fixture", ["cnn", "mlp"])
def test_linf_matches_torchattacks_without_random_start(fixture, request):
    torchattacks = pytest.importorskip("torchattacks")
    t = request.getfixturevalue(fixture)
    ours = pgd(t.model, t.x, t.y, 0.3, steps=10, step_size=0.05, random_start=False)
    ref = torchattacks.PGD(t.model, eps=0.3, alpha=0.05, steps=10, random_start=False)(t.x, t.y)
    assert _mismatch_points(ours.x_adv, ref) <= 2
    with torch.no_grad():
        ref_success = t.model(ref).argmax(1) != t.y
    assert (ours.success != ref_success).sum() <= 2


@pytest.mark.parametrize("fixture", ["cnn", "mlp"])
def test_l2_matches_torchattacks_without_random_start(fixture, request):
    torchattacks = pytest.importorskip("torchattacks")
    t = request.getfixturevalue(fixture)
    ours = pgd(t.model, t.x, t.y, 2.0, norm="l2", steps=10, step_size=0.3, random_start=False)
    ref = torchattacks.PGDL2(t.model, eps=2.0, alpha=0.3, steps=10, random_start=False)(t.x, t.y)
    # normalised-gradient steps have no sign ties; float32 drift over 10 steps is ~5e-5
    torch.testing.assert_close(ours.x_adv, ref, atol=2e-4, rtol=0)


def test_targeted_matches_torchattacks(cnn):
    torchattacks = pytest.importorskip("torchattacks")
    target = (cnn.y + 1) % 10
    ours = pgd(cnn.model, cnn.x, cnn.y, 0.3, steps=10, step_size=0.05, random_start=False, target=target)
    atk = torchattacks.PGD(cnn.model, eps=0.3, alpha=0.05, steps=10, random_start=False)
    atk.set_mode_targeted_by_label(quiet=True)
    ref = atk(cnn.x, target)
    assert _mismatch_points(ours.x_adv, ref) <= 2
    with torch.no_grad():
        assert torch.equal(ours.success, cnn.model(ours.x_adv).argmax(1) == target)
    assert ours.success.float().mean() > 0.5


@pytest.mark.parametrize("norm, eps", [("linf", 0.3), ("l2", 2.0)])
def test_projection_and_strength(norm, eps, mlp):
    r = pgd(mlp.model, mlp.x, mlp.y, eps, norm=norm, steps=20, step_size=eps / 8)
    assert (r.norms[norm] <= eps * (1 + 1e-5) + 1e-6).all()
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.success[mlp.correct].float().mean() > 0.9
    assert (r.counts["forward"] == 21).all() and (r.counts["backward"] == 20).all()


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_does_not_reach_boundary_when_steps_are_short(norm, cnn):
    # step_size * steps < eps: the projection never binds (cleverhans' check)
    r = pgd(cnn.model, cnn.x, cnn.y, 1.0, norm=norm, steps=3, step_size=0.1, random_start=False)
    assert (r.norms[norm] <= 0.3 + 1e-5).all()


def test_random_start_uses_only_the_generator(cnn):
    x, y = cnn.x[:32], cnn.y[:32]
    state = torch.get_rng_state()
    a = pgd(cnn.model, x, y, 0.1, steps=2, step_size=0.02)
    b = pgd(cnn.model, x, y, 0.1, steps=2, step_size=0.02, generator=torch.Generator().manual_seed(0))
    c = pgd(cnn.model, x, y, 0.1, steps=2, step_size=0.02, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.x_adv, b.x_adv)
    assert not torch.equal(a.x_adv, c.x_adv)


def test_random_start_only(cnn):
    # steps=0: x_adv is the clipped random start, inside the ball
    x, y = cnn.x[:32], cnn.y[:32]
    r = pgd(cnn.model, x, y, 0.1, steps=0)
    assert (r.norms["linf"] <= 0.1 + 1e-6).all() and (r.norms["linf"] > 0.05).all()
    r2 = pgd(cnn.model, x, y, 0.5, norm="l2", steps=0)
    assert (r2.norms["l2"] <= 0.5 + 1e-5).all() and (r2.norms["l2"] > 0.2).all()


def test_l2_random_start_is_uniform_in_the_ball():
    from advlab.attacks.pgd import _random_start

    d = _random_start((20000, 1, 1, 3), 1.0, "l2", torch.Generator().manual_seed(0), torch.float64)
    radius = d.flatten(1).norm(dim=1)
    assert radius.max() <= 1.0 + 1e-12
    # uniform in a 3-ball: P(r <= t) = t^3
    for t in (0.5, 0.8):
        assert abs(float((radius <= t).double().mean()) - t**3) < 0.015


def test_restarts_freeze_successful_points(cnn):
    x, y = cnn.x, cnn.y
    one = pgd(cnn.model, x, y, 0.1, steps=5, step_size=0.03, restarts=1)
    three = pgd(cnn.model, x, y, 0.1, steps=5, step_size=0.03, restarts=3)
    # restart 0 draws the same noise, so its successes are kept unchanged and frozen
    assert (three.success | ~one.success).all()
    won = one.success
    assert torch.equal(three.x_adv[won], one.x_adv[won])
    assert (three.counts["forward"][won] == 6).all() and (three.counts["backward"][won] == 5).all()
    assert (three.extra["restart"][won] == 0).all()
    late = three.success & ~one.success
    assert (three.counts["forward"][~won] >= 12).all()
    assert (three.counts["forward"][~three.success] == 18).all()
    assert (three.extra["restart"][late] >= 1).all()
    # points that never succeed keep the restart with the highest objective
    with torch.no_grad():
        obj = attack_objective(cnn.model(three.x_adv), y)
    torch.testing.assert_close(obj[~three.success], three.extra["objective"][~three.success], atol=1e-5, rtol=1e-5)
    assert (three.extra["objective"][~three.success] >= one.extra["objective"][~three.success] - 1e-6).all()


def test_cw_loss_masks_the_true_class_with_minus_infinity():
    # every wrong logit is negative: a 0-mask would pick the true class (Madry's old bug)
    logits = torch.tensor([[-1.0, -3.0, -2.0], [5.0, 1.0, 2.0]])
    y = torch.tensor([0, 0])
    obj = attack_objective(logits, y, loss="cw", kappa=0.0)
    torch.testing.assert_close(obj, torch.tensor([-1.0, -3.0]))
    obj50 = attack_objective(logits, y, loss="cw", kappa=50.0)
    torch.testing.assert_close(obj50, torch.tensor([-51.0, -53.0]))
    tgt = attack_objective(logits, y, target=torch.tensor([2, 1]), loss="cw", kappa=1.0)
    # targeted: -relu(max_{j != t} z_j - z_t + kappa)
    torch.testing.assert_close(tgt, torch.tensor([-2.0, -5.0]))


def test_cw_loss_attack_is_strong(mlp):
    r = pgd(mlp.model, mlp.x, mlp.y, 0.3, steps=20, step_size=0.03, loss="cw", kappa=50.0)
    assert r.success[mlp.correct].float().mean() > 0.9
    assert (r.norms["linf"] <= 0.3 + 1e-6).all()


def test_other_devices_and_dtypes(mlp):
    model = mlp.model.double()
    try:
        r = pgd(model, mlp.x[:8].double(), mlp.y[:8], 0.1, steps=2, step_size=0.05)
        assert r.x_adv.dtype == torch.float64
    finally:
        mlp.model.float()
    if torch.cuda.is_available():  # pragma: no cover - CPU CI
        m = mlp.model.cuda()
        try:
            r = pgd(m, mlp.x[:8].cuda(), mlp.y[:8].cuda(), 0.1, steps=2, step_size=0.05)
            assert r.x_adv.device.type == "cuda" and math.isfinite(float(r.norms["l2"].sum()))
        finally:
            mlp.model.cpu()
