"""One-pixel attack by differential evolution (Su, Vargas, Sakurai 2019)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advlab.attacks import AttackResult, onepixel
from advlab.attacks.onepixel import _children, _distinct, _initial, _uniform, one_pixel

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16
KEY1, KEY2 = (5, 11), (12, 3)


class KeyPixelNet(nn.Module):
    """A hand-made classifier whose one-pixel solutions are known.

    Class 0 (logit 0) unless channel 0 is bright at a key pixel: for class k >= 1,
    ``logit_k = 10 * (sum(bump_k * x[:, 0]) - theta)``, ``bump_k`` a Gaussian (sigma 2)
    centred on class k's key pixel with value 1 there, ``theta = 0.9 + 0.5 * mean(x[:, 1])``
    (0.9 for one channel). On an image black in channel 0, one pixel flips the class to
    k iff it is class k's key pixel with channel-0 value above theta (>= 230 / 255 at
    least): a neighbour reaches only exp(-1/8) = 0.88. The bumps guide the search.
    """

    def __init__(self, keys=(KEY1,), size: int = SIZE, dtype=torch.float64) -> None:
        super().__init__()
        r = torch.arange(size, dtype=dtype)
        bumps = [torch.exp(-((r[:, None] - a) ** 2 + (r[None, :] - b) ** 2) / 8.0) for a, b in keys]
        self.bump = nn.Parameter(torch.stack(bumps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.bump.dtype)
        theta = 0.9 + (0.5 * x[:, 1].mean((1, 2)) if x.shape[1] > 1 else 0.0)
        s = torch.einsum("khw,nhw->nk", self.bump, x[:, 0]) - torch.as_tensor(theta).reshape(-1, 1)
        return 10.0 * torch.cat([torch.zeros_like(s[:, :1]), s], 1)


def key_points(n: int, channels: int = 3, hardness: float = 0.15, seed: int = 0):
    """n distinct images, black in channel 0; channel 1 raises the value needed at the key
    pixel from 0.9 up to 0.9 + 0.5 * hardness; channel 2 is noise (distinct content)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, channels, SIZE, SIZE, dtype=torch.float64)
    if channels > 1:
        x[:, 1] = torch.linspace(0.0, hardness, n, dtype=torch.float64)[:, None, None]
    if channels > 2:
        x[:, 2] = torch.randint(0, 256, (n, SIZE, SIZE), generator=g).to(torch.float64) / 255
    return x, torch.zeros(n, dtype=torch.int64)


def changed_pixels(r: AttackResult, x: torch.Tensor) -> torch.Tensor:
    """L0 over pixel positions: positions where any channel changed, per point."""
    return (r.x_adv != x).any(1).flatten(1).sum(1)


# ------------------------------------------------------------------ invariants


def test_result_invariants_on_the_hand_made_model():
    model = KeyPixelNet().eval()
    x, y = key_points(6)
    x_copy, y_copy = x.clone(), y.clone()
    r = one_pixel(model, x, y, popsize=40, max_iter=5)
    assert isinstance(r, AttackResult)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype and not r.x_adv.requires_grad
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.success.shape == (6,) and r.success.dtype == torch.bool and r.success.any()
    assert set(r.counts) == {"forward", "backward"}
    assert all(v.shape == (6,) and v.dtype == torch.int64 for v in r.counts.values())
    assert (r.counts["backward"] == 0).all()
    with torch.no_grad():
        assert torch.equal(r.success, model(r.x_adv).argmax(1) != y)
    d = (r.x_adv - x).flatten(1)
    torch.testing.assert_close(r.norms["l2"], d.norm(dim=1))
    torch.testing.assert_close(r.norms["linf"], d.abs().amax(1))
    assert torch.equal(r.norms["l0"], (d != 0).sum(1).to(d.dtype))
    # failed points are returned unchanged
    assert torch.equal(r.x_adv[~r.success], x[~r.success])
    assert r.extra["pixels"] == 1
    assert r.extra["generations"].dtype == torch.int64 and r.extra["best_fitness"].shape == (6,)
    assert r.extra["best_candidate"].shape == (6, 1, 5)


def test_result_invariants_on_a_trained_cnn_in_float32(cnn):
    x, y = cnn.x[:8], cnn.y[:8]
    r = one_pixel(cnn.model, x, y, popsize=20, max_iter=3)
    assert r.x_adv.dtype == torch.float32 and r.x_adv.shape == x.shape
    with torch.no_grad():
        assert torch.equal(r.success, cnn.model(r.x_adv).argmax(1) != y)
    assert (changed_pixels(r, x) <= 1).all()
    # points misclassified at x are not attacked
    assert torch.equal(r.success[~cnn.correct[:8]], torch.ones_like(r.success[~cnn.correct[:8]]))


@pytest.mark.parametrize("pixels", [1, 3])
def test_at_most_pixels_changed_and_values_on_the_255_grid(pixels):
    model = KeyPixelNet().eval()
    x, y = key_points(6)
    r = one_pixel(model, x, y, pixels=pixels, popsize=40, max_iter=10)
    assert r.success.sum() >= 4
    assert (changed_pixels(r, x) <= pixels).all()
    assert (changed_pixels(r, x)[r.success] >= 1).all()
    changed = r.x_adv[r.x_adv != x] * 255
    torch.testing.assert_close(changed, changed.round(), atol=1e-9, rtol=0)
    # the reported candidates are the pixels written (integers in range)
    cand = r.extra["best_candidate"]
    assert cand.shape == (6, pixels, 5)
    assert ((cand[..., :2] >= 0) & (cand[..., :2] < SIZE)).all()
    assert ((cand[..., 2:] >= 0) & (cand[..., 2:] <= 255)).all()
    for i in r.success.nonzero().flatten().tolist():
        expect = x[i].clone()
        for row, col, *vals in cand[i].tolist():
            expect[:, row, col] = torch.tensor(vals, dtype=x.dtype) / 255
        assert torch.equal(r.x_adv[i], expect)


def test_finds_the_known_pixel_with_the_paper_settings():
    model = KeyPixelNet().eval()
    x, y = key_points(8)
    r = one_pixel(model, x, y)  # rand1, F = 0.5, no crossover, 400 x 100
    assert r.success.all()
    cand = r.extra["best_candidate"][:, 0]
    assert (cand[:, 0] == KEY1[0]).all() and (cand[:, 1] == KEY1[1]).all()
    # channel 0 above theta = 0.9 + 0.5 * mean(channel 1)
    theta = 0.9 + 0.5 * x[:, 1].mean((1, 2))
    assert (r.x_adv[:, 0, KEY1[0], KEY1[1]] > theta).all()
    assert (cand[:, 2] >= 230).all()
    assert (r.extra["best_fitness"] < 0.5).all()
    assert (changed_pixels(r, x) == 1).all()


def test_targeted_success_means_the_target():
    model = KeyPixelNet(keys=(KEY1, KEY2)).eval()
    x, y = key_points(6)
    target = torch.tensor([2, 1, 2, 1, 2, 2])
    r = one_pixel(model, x, y, target=target, popsize=100, max_iter=30)
    with torch.no_grad():
        pred = model(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred == target)
    assert r.success.all()
    cand = r.extra["best_candidate"][:, 0, :2]
    keys = torch.tensor([KEY1, KEY2])[target - 1]
    assert torch.equal(cand, keys)
    # best_fitness is the target's probability, above one half at the returned point
    assert (r.extra["best_fitness"] > 0.5).all()


def test_early_stop_threshold():
    model = KeyPixelNet().eval()
    x, y = key_points(4, hardness=0.05)  # best reachable p(class 0): 0.27 .. 0.32
    plain = one_pixel(model, x, y, popsize=40, max_iter=20)
    assert plain.success.all()
    # p(class 0) cannot drop below 1 / (1 + e) here: an unreachable threshold runs every
    # generation and keeps the fittest adversarial candidate
    never = one_pixel(model, x, y, popsize=40, max_iter=20, early_stop=0.01)
    assert never.success.all() and (never.extra["generations"] == 20).all()
    assert (never.extra["best_fitness"] <= plain.extra["best_fitness"]).all()
    assert (never.counts["forward"] > plain.counts["forward"]).all()
    # a reachable threshold stops once the true class is below it
    some = one_pixel(model, x, y, popsize=40, max_iter=40, early_stop=0.4)
    assert some.success.all() and (some.extra["best_fitness"] < 0.4).all()
    assert (some.extra["generations"] < 40).all()
    # targeted: target probability above the threshold
    t = one_pixel(model, x, y, target=torch.ones(4, dtype=torch.int64), popsize=40, max_iter=40, early_stop=0.6)
    assert t.success.all() and (t.extra["best_fitness"] > 0.6).all()


def test_deterministic_and_generator_driven():
    model = KeyPixelNet().eval()
    x, y = key_points(6, hardness=0.19)
    state = torch.get_rng_state()
    a = one_pixel(model, x, y, popsize=20, max_iter=4)
    b = one_pixel(model, x, y, popsize=20, max_iter=4, generator=torch.Generator().manual_seed(0))
    c = one_pixel(model, x, y, popsize=20, max_iter=4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.counts["forward"], b.counts["forward"])
    assert torch.equal(a.extra["best_candidate"], b.extra["best_candidate"])
    assert not torch.equal(a.extra["best_candidate"], c.extra["best_candidate"])


@pytest.mark.parametrize("strategy", ["rand1", "best1bin"])
def test_batch_equals_one_by_one(strategy):
    model = KeyPixelNet().eval()
    x, y = key_points(6, hardness=0.19)
    x[3, 0, KEY1[0], KEY1[1]] = 1.0  # misclassified at x: frozen from the start
    kw = dict(popsize=40, max_iter=8, strategy=strategy, crossover=0.9 if strategy == "best1bin" else None)
    batch = one_pixel(model, x, y, **kw)
    assert not batch.success.all() and batch.success.sum() >= 2  # both kinds of points
    for i in range(len(x)):
        one = one_pixel(model, x[i : i + 1], y[i : i + 1], **kw)
        assert torch.equal(one.x_adv, batch.x_adv[i : i + 1])
        assert one.success.item() == batch.success[i].item()
        assert one.counts["forward"].item() == batch.counts["forward"][i].item()
        assert one.extra["generations"].item() == batch.extra["generations"][i].item()
        assert torch.equal(one.extra["best_candidate"], batch.extra["best_candidate"][i : i + 1])
    # nor does the order of the batch, nor the forward chunk size
    rev = one_pixel(model, x.flip(0), y, **kw, batch_size=7)
    assert torch.equal(rev.x_adv.flip(0), batch.x_adv)
    assert torch.equal(rev.counts["forward"].flip(0), batch.counts["forward"])


def test_finished_points_are_frozen():
    model = KeyPixelNet().eval()
    x, y = key_points(4, channels=2, hardness=0.19)
    x[0, 0, KEY1[0], KEY1[1]] = 1.0  # adversarial at x
    x[1, 1] = 1.0  # theta = 1.4: unreachable with one pixel
    pop, iters = 20, 8
    r = one_pixel(model, x, y, popsize=pop, max_iter=iters)
    fwd, gens = r.counts["forward"], r.extra["generations"]
    # not attacked: one clean forward, no generation, returned as is
    assert r.success[0] and fwd[0] == 1 and gens[0] == 0 and torch.equal(r.x_adv[0], x[0])
    assert (r.extra["best_candidate"][0] == -1).all()
    # never succeeds: every generation runs; at most popsize children per generation
    assert not r.success[1] and gens[1] == iters and torch.equal(r.x_adv[1], x[1])
    assert 1 + pop < fwd[1] <= 1 + pop * (1 + iters)
    # successful points stop: no forwards after their last generation, + 1 final judgement
    for i in (2, 3):
        if r.success[i]:
            assert fwd[i] <= 2 + pop * (1 + gens[i])
    ok = one_pixel(model, x[2:3], y[2:3], popsize=pop, max_iter=40)
    assert ok.success.item() and ok.extra["generations"].item() < 40


def _constant_1x1():
    """A 1 x 1 grey image and a model that ignores it (class 0 always)."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(1, 2)).double()
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].bias.copy_(torch.tensor([1.0, 0.0]))
    return model, torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64), torch.zeros(1, dtype=torch.int64)


def test_children_identical_to_their_parent_are_not_evaluated(monkeypatch):
    # every candidate floors to (0, 0, v). With crossover 0 a child takes one coordinate
    # from the mutant, and where that is the row or the column (2 times in 3) the child is
    # its parent's image again: it cannot be fitter and is not evaluated
    monkeypatch.setattr(onepixel._Memo, "enabled", False, raising=False)
    monkeypatch.setattr(onepixel._Memo, "__init__", _memo_off)
    model, x, y = _constant_1x1()
    r = one_pixel(model, x, y, popsize=8, max_iter=50, crossover=0.0)
    assert r.extra["generations"].item() == 50 and not r.success.item()
    evaluated = r.counts["forward"].item() - 1 - 8
    assert 0.2 * 8 * 50 < evaluated < 0.5 * 8 * 50


def _memo_off(self, *args, **kwargs):
    self.enabled = False


def test_candidates_met_before_are_not_evaluated_again():
    # one channel, one position: 256 distinct candidates in all
    model, x, y = _constant_1x1()
    r = one_pixel(model, x, y, popsize=8, max_iter=100)
    assert r.extra["generations"].item() == 100
    assert r.counts["forward"].item() - 1 <= 256


def test_the_memo_changes_counts_only(monkeypatch):
    model = KeyPixelNet().eval()
    x, y = key_points(6, hardness=0.6)  # most points fail: populations converge and repeat
    kw = dict(popsize=30, max_iter=60)
    on = one_pixel(model, x, y, **kw)
    monkeypatch.setattr(onepixel._Memo, "__init__", _memo_off)
    off = one_pixel(model, x, y, **kw)
    assert torch.equal(on.x_adv, off.x_adv) and torch.equal(on.success, off.success)
    assert torch.equal(on.extra["generations"], off.extra["generations"])
    assert torch.equal(on.extra["best_candidate"], off.extra["best_candidate"])
    assert torch.equal(on.extra["best_fitness"], off.extra["best_fitness"])
    assert (on.counts["forward"] <= off.counts["forward"]).all()
    assert on.counts["forward"].sum() < off.counts["forward"].sum()


def test_model_mode_and_grads_untouched_and_works_under_no_grad(fresh_cnn):
    model = fresh_cnn.eval()
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
        r = one_pixel(model, x, y, popsize=8, max_iter=2)
    assert r.x_adv.shape == x.shape
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert model.training is False
    model.train(True)
    one_pixel(model, x, y, popsize=8, max_iter=1)
    assert model.training is True


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(pixels=0), "pixels"),
        (dict(pixels=257), "pixels"),
        (dict(pixels=1.5), "pixels"),
        (dict(popsize=3), "popsize"),
        (dict(max_iter=-1), "max_iter"),
        (dict(batch_size=0), "batch_size"),
        (dict(strategy="rand2"), "strategy"),
        (dict(F=0.0), "F"),
        (dict(F=2.5), "F"),
        (dict(F=(1.0, 0.5)), "F"),
        (dict(crossover=1.5), "crossover"),
        (dict(early_stop=1.0), "early_stop"),
        (dict(early_stop=0.0), "early_stop"),
    ],
)
def test_bad_parameters_raise(kw, match):
    model = KeyPixelNet().eval()
    x, y = key_points(2)
    with pytest.raises(ValueError, match=match):
        one_pixel(model, x, y, **kw)


def test_bad_inputs_raise():
    model = KeyPixelNet().eval()
    x, y = key_points(2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        one_pixel(model, x * 2, y)
    with pytest.raises(ValueError, match="target equals"):
        one_pixel(model, x, y, target=y)
    with pytest.raises(ValueError, match="y holds class"):
        one_pixel(model, x, y + 5)


# ------------------------------------------------------------------ the pieces


def test_counter_rng_is_uniform_and_keyed():
    keys = torch.tensor([1, 2, 3], dtype=torch.int64)
    u = _uniform(keys, 2, 7, (20000,))
    assert u.shape == (3, 20000) and u.dtype == torch.float64
    assert (u >= 0).all() and (u < 1).all()
    for row in u:
        hist = torch.histc(row, bins=10, min=0, max=1)
        assert (hist - 2000).abs().max() < 200
    assert abs(float(torch.corrcoef(torch.stack([u[0, :-1], u[0, 1:]]))[0, 1])) < 0.03  # neighbours
    # a row depends on its key only; tags and generations give other streams
    torch.testing.assert_close(_uniform(keys[1:2], 2, 7, (20000,))[0], u[1], rtol=0, atol=0)
    assert not torch.equal(_uniform(keys, 3, 7, (10,)), u[:, :10])
    assert not torch.equal(_uniform(keys, 2, 8, (10,)), u[:, :10])


def test_distinct_indices():
    u = _uniform(torch.arange(50, dtype=torch.int64), 0, 0, (6, 3))
    parent = torch.arange(6)
    r = _distinct(u, parent, 6)
    assert r.shape == (50, 6, 3) and (r >= 0).all() and (r < 6).all()
    cols = torch.cat([r, parent.view(1, 6, 1).expand(50, 6, 1)], -1)
    assert (cols.sort(-1).values.diff(dim=-1) > 0).all()  # all four different
    # uniform over the others: each of the 5 other indices ~ 1/5 of the first draws
    big = _distinct(_uniform(torch.arange(2000, dtype=torch.int64), 0, 0, (6, 1)), parent, 6)[..., 0]
    for p in range(6):
        counts = torch.bincount(big[:, p], minlength=6).double() / 2000
        assert counts[p] == 0 and (counts[torch.arange(6) != p] - 0.2).abs().max() < 0.04


def test_initial_population_follows_the_paper():
    pop = _initial(torch.arange(20, dtype=torch.int64), 400, 1, 3, 32, 24)
    assert pop.shape == (20, 400, 5)
    rows, cols, colours = pop[..., 0], pop[..., 1], pop[..., 2:]
    assert (rows >= 0).all() and (rows < 32).all() and (cols >= 0).all() and (cols < 24).all()
    assert abs(float(rows.mean()) - 16) < 0.3 and abs(float(cols.mean()) - 12) < 0.3
    assert (colours >= 0).all() and (colours <= 255).all()
    # N(128, 127) clipped to [0, 255]: about 16% at each end, mean 128
    assert abs(float(colours.mean()) - 128) < 2
    assert abs(float((colours == 0).double().mean()) - 0.157) < 0.01
    assert abs(float((colours == 255).double().mean()) - 0.157) < 0.01


def test_children_follow_the_mutation_rule():
    keys = torch.arange(4, dtype=torch.int64)
    upper = torch.tensor([32.0, 32.0, 256.0], dtype=torch.float64)
    # member i holds 10 + i everywhere: a rand1 child with F = 0.5 is r1 + 0.5 (r2 - r3),
    # inside the ranges, the same on every coordinate, on the grid of halves
    pop = (10 + torch.arange(10, dtype=torch.float64)).view(1, 10, 1).expand(4, 10, 3).contiguous()
    energy = torch.zeros(4, 10, dtype=torch.float64)
    child = _children(pop, energy, keys, 1, strategy="rand1", F=0.5, crossover=None, upper=upper)
    assert (child == child[..., :1]).all()  # the same rule on every coordinate
    halves = child[..., 0] * 2
    assert torch.equal(halves, halves.round())
    # best1bin: x_best + F (x_r1 - x_r2), F dithered in [0.5, 1)
    energy[:, 7] = -1.0
    child = _children(pop, energy, keys, 1, strategy="best1bin", F=(0.5, 1.0), crossover=None, upper=upper)
    assert ((child - 17).abs() <= 9).all() and not torch.equal(child * 2, (child * 2).round())
    # crossover = 0: exactly one coordinate comes from the mutant
    pop2 = torch.full((4, 10, 3), 3.0, dtype=torch.float64) + torch.arange(10.0, dtype=torch.float64)[:, None]
    child = _children(pop2, energy, keys, 2, strategy="rand1", F=0.5, crossover=0.0, upper=upper)
    assert torch.equal((child != pop2).sum(-1) <= 1, torch.ones(4, 10, dtype=torch.bool))
    # out-of-range coordinates are resampled inside their range (scipy's rule)
    far = torch.rand(4, 10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * upper
    child = _children(far, energy, keys, 3, strategy="rand1", F=2.0, crossover=None, upper=upper)
    assert ((child >= 0) & (child < upper)).all()


def test_best1bin_variant_finds_the_known_pixel():
    model = KeyPixelNet().eval()
    x, y = key_points(6)
    r = one_pixel(model, x, y, strategy="best1bin", max_iter=75)  # Hyperparticle's settings
    assert r.success.all()
    cand = r.extra["best_candidate"][:, 0]
    assert (cand[:, 0] == KEY1[0]).all() and (cand[:, 1] == KEY1[1]).all()


# ------------------------------------------------------------------ vs torchattacks


def test_success_rate_matches_torchattacks():
    """torchattacks.OnePixel runs scipy's best1bin DE (dither (0.5, 1), recombination 1,
    uniform init, continuous colours) per image; our best1bin variant is the same search
    up to the paper's N(128, 127) colour init and integer colours. Both stop when one
    pixel suffices; on the hand-made model the rates, over several seeds, agree."""
    torchattacks = pytest.importorskip("torchattacks")
    np = pytest.importorskip("numpy")
    model = KeyPixelNet().eval()
    x, y = key_points(40, channels=2, hardness=0.19)
    pop, iters = 40, 6  # a budget where about half the points succeed
    ours, theirs = [], []
    state = np.random.get_state()
    try:
        for seed in range(2):
            r = one_pixel(model, x, y, popsize=pop, max_iter=iters, strategy="best1bin",
                          generator=torch.Generator().manual_seed(seed))  # fmt: skip
            ours.append(r.success.double().mean())
            np.random.seed(seed)
            # popsize -> scipy's multiplier popsize // len(bounds) = 40 // 4: 40 members
            x_ta = torchattacks.OnePixel(copy.deepcopy(model), pixels=1, steps=iters, popsize=pop, inf_batch=400)(x, y)
            with torch.no_grad():
                theirs.append((model(x_ta).argmax(1) != y).double().mean())
    finally:
        np.random.set_state(state)
    ours_rate, theirs_rate = float(torch.stack(ours).mean()), float(torch.stack(theirs).mean())
    assert 0.2 < theirs_rate < 0.9, "test set-up: the budget should make the rate informative"
    assert abs(ours_rate - theirs_rate) <= 0.15, (ours_rate, theirs_rate)


# ------------------------------------------------------------------ local forward passes


def test_local_forward_gives_the_same_attack(cnn):
    """Patch forwards (LocalForward) give the full forwards' logits up to summation order,
    so the result matches (on a failed point, whose population runs all generations, a
    last-bit tie between two members can send the two evolutions apart)."""
    x, y = cnn.x[:12], cnn.y[:12]
    kw = dict(popsize=40, max_iter=15)
    local = one_pixel(cnn.model, x, y, local_forward=True, **kw)
    full = one_pixel(cnn.model, x, y, local_forward=False, **kw)
    assert torch.equal(local.success, full.success) and torch.equal(local.x_adv, full.x_adv)
    ok = local.success
    assert torch.equal(local.extra["best_candidate"][ok], full.extra["best_candidate"][ok])
    assert torch.equal(local.extra["generations"], full.extra["generations"])
    torch.testing.assert_close(local.extra["best_fitness"][ok], full.extra["best_fitness"][ok], rtol=1e-4, atol=1e-6)
    assert local.success.any() and (~local.success).any()


def test_local_forward_is_the_default_for_one_pixel_only(cnn, monkeypatch):
    built = []
    real = onepixel.LocalForward

    def spy(*args, **kwargs):
        built.append(args[1].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(onepixel, "LocalForward", spy)
    x, y = cnn.x[:4], cnn.y[:4]
    one_pixel(cnn.model, x, y, popsize=8, max_iter=1)
    assert built and built[-1] == 4
    built.clear()
    one_pixel(cnn.model, x, y, pixels=3, popsize=8, max_iter=1)
    one_pixel(cnn.model, x, y, popsize=8, max_iter=1, local_forward=False)
    assert built == []


def test_local_forward_required_but_impossible_raises(cnn):
    x, y = cnn.x[:2], cnn.y[:2]
    with pytest.raises(ValueError, match="pixels == 1"):
        one_pixel(cnn.model, x, y, pixels=3, local_forward=True)
    with pytest.raises(ValueError, match="local_forward=True needs an eval-mode"):
        one_pixel(KeyPixelNet().eval(), *key_points(2), local_forward=True)
    with pytest.raises(ValueError, match="local_forward must be"):
        one_pixel(cnn.model, x, y, local_forward="yes")
