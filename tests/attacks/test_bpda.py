"""bpda_eot_pgd: BPDA + EoT PGD (Athalye, Carlini & Wagner 2018) against the defences of advlab.defenses."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advlab.attacks import pgd
from advlab.attacks.bpda import bpda_eot_pgd
from advlab.defenses import JPEG, SAP, BitDepth, RandomDefense, Thermometer

pytestmark = pytest.mark.usefixtures("one_thread")


def bitdepth(trained) -> BitDepth:
    return BitDepth(trained.model, bits=3)


def run(model, x, y, **kw):
    kw = {"eps": 0.2, "steps": 5, "step_size": 0.05, **kw}
    eps = kw.pop("eps")
    return bpda_eot_pgd(model, x, y, eps, **kw)


# ------------------------------------------------------------------ invariants


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 2.0)])
def test_result_shape_bounds_eps_ball_and_inputs_untouched(cnn, norm, eps):
    x, y = cnn.x[:16], cnn.y[:16]
    x_copy, y_copy = x.clone(), y.clone()
    model = bitdepth(cnn).bpda()
    r = run(model, x, y, eps=eps, norm=norm, step_size=eps / 4)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype and not r.x_adv.requires_grad
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.success.shape == (16,) and r.success.dtype == torch.bool
    assert set(r.counts) == {"forward", "backward"}
    assert all(v.dtype == torch.int64 and v.shape == (16,) for v in r.counts.values())
    assert (r.norms[norm] <= eps + 1e-5).all()
    d = (r.x_adv - x).flatten(1)
    torch.testing.assert_close(r.norms["l2"], d.norm(dim=1))
    torch.testing.assert_close(r.norms["linf"], d.abs().amax(1))
    # success agrees with a fresh evaluation of the exact defence
    with torch.no_grad():
        pred = bitdepth(cnn)(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred != y)
    assert r.success.sum() >= 8, "test setup: the attack should succeed on most points"
    assert r.extra["iterations"].dtype == torch.int64
    assert torch.equal(r.extra["fooled_fraction"], r.success.float())


def test_batch_equals_one_by_one_for_a_deterministic_defence(cnn):
    x, y = cnn.x[:6], cnn.y[:6]
    model = bitdepth(cnn).bpda()
    kw = dict(random_start=False, eot_samples=2, early_stop=True)
    batch = run(model, x, y, **kw)
    for i in range(len(x)):
        one = run(model, x[i : i + 1], y[i : i + 1], **kw)
        torch.testing.assert_close(one.x_adv, batch.x_adv[i : i + 1], atol=1e-5, rtol=0)
        assert one.success.item() == batch.success[i].item()
        assert one.counts["forward"].item() == batch.counts["forward"][i].item()


def test_deterministic_for_a_random_defence_and_seed_dependent(cnn):
    x, y = cnn.x[:8], cnn.y[:8]
    sap = SAP(cnn.model, seed=5)
    kw = dict(eot_samples=2, eval_samples=3)
    a = run(sap, x, y, generator=torch.Generator().manual_seed(1), **kw)
    sap.reseed(123)  # the defence's own state does not matter: the attack reseeds it
    b = run(sap, x, y, generator=torch.Generator().manual_seed(1), **kw)
    c = run(sap, x, y, generator=torch.Generator().manual_seed(2), **kw)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert torch.equal(a.extra["fooled_fraction"], b.extra["fooled_fraction"])
    assert not torch.equal(a.x_adv, c.x_adv)


def test_eps_zero_returns_x(cnn):
    x, y = cnn.x[:8], cnn.y[:8]
    r = run(bitdepth(cnn).bpda(), x, y, eps=0.0)
    assert torch.equal(r.x_adv, x) and (r.norms["linf"] == 0).all()


def test_targeted_success_means_the_target_class(cnn):
    x, y = cnn.x[:16], cnn.y[:16]
    target = (y + 1) % 10
    r = run(bitdepth(cnn).bpda(), x, y, eps=0.3, steps=20, step_size=0.03, target=target)
    with torch.no_grad():
        pred = bitdepth(cnn)(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred == target)
    assert r.success.sum() >= 4, "test setup: some targeted points should succeed"


def test_counts_per_step_and_sample(cnn):
    x, y = cnn.x[:4], cnn.y[:4]
    r = run(bitdepth(cnn).bpda(), x, y, steps=3, eot_samples=4, eval_samples=5)
    assert (r.counts["forward"] == 3 * 4 + 5).all() and (r.counts["backward"] == 3 * 4).all()
    assert (r.extra["iterations"] == 3).all()


def test_early_stop_freezes_points_at_their_first_success(cnn):
    x, y = cnn.x[:16], cnn.y[:16]
    model = bitdepth(cnn).bpda()
    r = run(model, x, y, eps=0.3, steps=30, step_size=0.02, early_stop=True)
    assert r.success.sum() >= 12
    assert (r.extra["iterations"][r.success] < 30).all()
    stopped = r.extra["iterations"] < 30
    assert torch.equal(r.success[stopped], torch.ones_like(r.success[stopped]))
    # frozen points were not recomputed: their counts stop with them (one pass per step)
    torch.testing.assert_close(r.counts["forward"], r.extra["iterations"] + 1 + stopped.long())


@pytest.mark.parametrize(
    "kw,match",
    [
        (dict(eps=-0.1), "eps"),
        (dict(eps=float("nan")), "eps"),
        (dict(norm="l1"), "norm"),
        (dict(steps=-1), "steps"),
        (dict(steps=1.5), "steps"),
        (dict(step_size=float("inf")), "step_size"),
        (dict(eot_samples=0), "eot_samples"),
        (dict(eval_samples=0), "eval_samples"),
        (dict(loss="mse"), "loss"),
        (dict(kappa=-1.0), "kappa"),
    ],
)
def test_bad_parameters_raise(cnn, kw, match):
    with pytest.raises(ValueError, match=match):
        run(bitdepth(cnn).bpda(), cnn.x[:2], cnn.y[:2], **kw)


def test_bad_inputs_raise(cnn):
    model = bitdepth(cnn).bpda()
    with pytest.raises(ValueError, match="0, 1"):
        run(model, cnn.x[:2] * 2, cnn.y[:2])
    with pytest.raises(ValueError, match="target"):
        run(model, cnn.x[:2], cnn.y[:2], target=cnn.y[:2])


def test_model_mode_and_parameter_grads_untouched(fresh_cnn):
    fresh_cnn.train()
    model = BitDepth(fresh_cnn).bpda()
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    run(model, x, torch.arange(4))
    assert fresh_cnn.training
    assert all(p.grad is None for p in fresh_cnn.parameters())
    with torch.no_grad():  # works under a caller's no_grad too
        r = run(model, x, torch.arange(4))
    assert (r.norms["linf"] > 0).any()


# ------------------------------------------------------------------ relation to PGD and peers


def test_equals_pgd_for_a_deterministic_model(cnn):
    """eot_samples = 1, no early stop, same generator: Madry's PGD with one restart.
    More EoT samples of a deterministic model average identical gradients: same result."""
    x, y = cnn.x[:16], cnn.y[:16]
    ref = pgd(cnn.model, x, y, 0.1, steps=5, step_size=0.03, generator=torch.Generator().manual_seed(3))
    for eot in (1, 3):
        r = bpda_eot_pgd(cnn.model, x, y, 0.1, steps=5, step_size=0.03, eot_samples=eot,
                         generator=torch.Generator().manual_seed(3))  # fmt: skip
        torch.testing.assert_close(r.x_adv, ref.x_adv, atol=1e-6, rtol=0)
        assert torch.equal(r.success, ref.success)
    assert torch.equal(bpda_eot_pgd(cnn.model, x, y, 0.1, steps=5, step_size=0.03).counts["forward"],
                       ref.counts["forward"])  # fmt: skip


def test_matches_torchattacks_eotpgd_on_a_bpda_model(cnn):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = cnn.x[:16], cnn.y[:16]
    model = bitdepth(cnn).bpda()
    atk = torchattacks.EOTPGD(copy.deepcopy(model), eps=0.2, alpha=0.03, steps=6, eot_iter=2, random_start=False)
    theirs = atk(x, y)
    ours = bpda_eot_pgd(model, x, y, 0.2, steps=6, step_size=0.03, eot_samples=2, random_start=False)
    torch.testing.assert_close(ours.x_adv, theirs, atol=1e-6, rtol=0)


class RandomSign(RandomDefense):
    """x -> s * x with s = +1 (p = 0.8) or -1, one draw per image: the one-sample gradient
    points the wrong way 20% of the time, the expected gradient never does."""

    def transform(self, x):
        s = torch.where(self._rand(x.shape[0], like=x) < 0.8, 1.0, -1.0)
        return x * s.view(-1, 1, 1, 1)


class SumDifference(nn.Module):
    """logits [0, (z * w).sum()] with w = +1 on the left half, -1 on the right half."""

    def forward(self, z):
        w = torch.ones_like(z[0])
        w[..., z.shape[-1] // 2 :] = -1.0
        return torch.stack([torch.zeros(len(z)), (z * w).flatten(1).sum(1)], dim=1)


def test_eot_averages_fresh_samples_per_step():
    model = RandomSign(SumDifference(), seed=0)
    x = torch.full((200, 1, 2, 2), 0.5)  # (x * w).sum() = 0: sigmoid = 1/2 whatever s is
    y = torch.zeros(200, dtype=torch.int64)
    w_sign = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    kw = dict(steps=1, step_size=0.1, random_start=False)
    one = bpda_eot_pgd(model, x, y, 0.1, eot_samples=1, **kw)
    wrong = ((one.x_adv - x)[:, 0] * w_sign < 0).flatten(1).all(1).float().mean()
    assert 0.1 < wrong < 0.3  # one sample: the wrong direction for ~20% of the points
    many = bpda_eot_pgd(model, x, y, 0.1, eot_samples=64, **kw)
    torch.testing.assert_close(many.x_adv - x, 0.1 * w_sign.expand(200, 1, 2, 2))


# ------------------------------------------------------------------ the key acceptance: BPDA breaks the defence


def thermometer_cnn() -> nn.Module:
    """Wong et al.'s small CNN shape on 16 thermometer channels: cheap enough to train in a test."""
    return nn.Sequential(
        nn.Conv2d(16, 16, 4, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 10),
    )  # fmt: skip


@pytest.fixture(scope="module")
def thermometer(mnist):
    """A CNN trained for 200 Adam steps on 16-level thermometer codes of MNIST."""
    x_tr, y_tr, x_te, y_te = mnist
    with torch.random.fork_rng():
        torch.manual_seed(0)
        defense = Thermometer(thermometer_cnn(), levels=16)
        opt = torch.optim.Adam(defense.classifier.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(0)
        for _ in range(200):
            i = torch.randint(0, len(x_tr), (64,), generator=g)
            loss = nn.functional.cross_entropy(defense.classifier(defense.transform(x_tr[i])), y_tr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    defense.eval()
    with torch.no_grad():
        acc = float((defense(x_te).argmax(1) == y_te).float().mean())
    assert acc > 0.85, f"test setup: the thermometer model trains to {acc:.2f} only"
    return defense


def robust_accuracy(result, correct) -> float:
    return float((~result.success & correct).float().sum() / correct.float().sum())


def correct_points(model, x, y):
    with torch.no_grad():
        return model(x).argmax(1) == y


def test_bpda_breaks_thermometer_encoding_where_naive_pgd_fails(thermometer, mnist):
    x, y = mnist[2][:64], mnist[3][:64]
    ok = correct_points(thermometer, x, y)
    naive = pgd(thermometer, x, y, 0.3, steps=20, step_size=0.03)
    adaptive = bpda_eot_pgd(thermometer.bpda(), x, y, 0.3, steps=20, step_size=0.03)
    assert robust_accuracy(naive, ok) > 0.8  # zero gradients: only the random start moves
    assert robust_accuracy(adaptive, ok) < 0.1


@pytest.mark.parametrize("make", [lambda m: BitDepth(m, bits=3), lambda m: JPEG(m, quality=75)], ids=["bits", "jpeg"])
def test_bpda_identity_breaks_input_quantisation(cnn, make):
    defense = make(cnn.model)
    x, y = cnn.x[:64], cnn.y[:64]
    ok = correct_points(defense, x, y)
    assert ok.float().mean() > 0.85, "test setup: the fixture CNN must survive the transform"
    naive = pgd(defense, x, y, 0.3, steps=20, step_size=0.03)
    adaptive = bpda_eot_pgd(defense.bpda(), x, y, 0.3, steps=20, step_size=0.03)
    assert robust_accuracy(naive, ok) > 0.8
    assert robust_accuracy(adaptive, ok) < 0.1


# ------------------------------------------------------------------ LID on a real network


def test_lid_detector_flags_pgd_points_more_often_than_clean_ones(cnn, mnist):
    from advlab.defenses import LIDDetector

    x, y = mnist[2][:400], mnist[3][:400]
    with torch.no_grad():
        keep = cnn.model(x).argmax(1) == y
    x, y = x[keep][:300], y[keep][:300]
    adv = pgd(cnn.model, x, y, 0.3, steps=10, step_size=0.05)
    noisy = (x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    det = LIDDetector(cnn.model, k=20, batch_size=100)
    assert det.layers == ["input", "1", "4", "8", "logits"]
    det.fit(x[:200], adv.x_adv[:200], noisy[:200])
    clean_rate = det.detection_rate(x[200:], x[200:])
    adv_rate = det.detection_rate(adv.x_adv[200:], x[200:])
    assert clean_rate < 0.2
    assert adv_rate > clean_rate + 0.1
