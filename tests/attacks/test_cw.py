"""Carlini-Wagner L2, L0 and Linf attacks (Carlini & Wagner 2017, nn_robust_attacks)."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from advlab.attacks.cw import cw_l0, cw_l2, cw_linf
from advlab.attacks.cw._common import adam_step, margin
from advlab.attacks.cw.l0 import _freeze
from advlab.attacks.result import perturbation_norms

pytestmark = pytest.mark.usefixtures("one_thread")

# small settings that still succeed on the fixture MLP
FAST = {
    "l2": (cw_l2, dict(binary_search_steps=5, max_iter=100, initial_const=0.1, lr=0.1)),
    "linf": (cw_linf, dict(max_iter=50, lr=2e-2, initial_const=1e-2, decrease_factor=0.8)),
    "l0": (cw_l0, dict(max_iter=30, lr=5e-2, initial_const=0.1, largest_const=10.0)),
}
TINY = {  # for one-by-one runs
    "l2": dict(binary_search_steps=3, max_iter=40, initial_const=0.3, lr=0.1),
    "linf": dict(max_iter=20, lr=3e-2, initial_const=1e-2, largest_const=0.1, decrease_factor=0.6),
    "l0": dict(max_iter=10, lr=0.2, initial_const=2.0, largest_const=20.0),
}


def run(name, model, x, y, target=None, **kw):
    fn, fast = FAST[name]
    return fn(model, x, y, target=target, **{**fast, **kw})


def predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


@pytest.fixture(scope="module")
def points(mlp):
    """Seven correctly classified test points and one the model gets wrong (last)."""
    right = mlp.correct.nonzero().flatten()[:7]
    wrong = (~mlp.correct).nonzero().flatten()[:1]
    assert len(wrong) == 1, "test setup: the fixture model misclassifies a few points"
    idx = torch.cat([right, wrong])
    return mlp.x[idx].clone(), mlp.y[idx].clone()


@pytest.fixture(scope="module")
def results(mlp, points):
    """Each attack once, untargeted and targeted, on the same points (shared by the tests)."""
    mlp.model.zero_grad(set_to_none=True)  # the session model is shared with peer-library tests
    x, y = points
    x_before = x.clone()
    target = (y + 1) % 10
    out = {}
    for name in FAST:
        out[name, False] = run(name, mlp.model, x, y)
        out[name, True] = run(name, mlp.model, x, y, target)
    assert torch.equal(x, x_before), "an attack modified its input"
    return out


# ----------------------------------------------------------------------- invariants


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize("name", list(FAST))
def test_invariants(name, targeted, results, points, mlp):
    x, y = points
    target = (y + 1) % 10
    r = results[name, targeted]
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    pred = predict(mlp.model, r.x_adv)
    assert torch.equal(r.success, pred == target if targeted else pred != y)
    for k, v in perturbation_norms(x, r.x_adv).items():
        torch.testing.assert_close(r.norms[k], v)
    assert r.success.float().mean() >= 0.75
    # failures come back as x, never as a zero image; their constant is NaN
    assert torch.equal(r.x_adv[~r.success], x[~r.success])
    assert r.extra["const"][~r.success].isnan().all()
    assert (r.extra["const"][r.success] >= 0).all()
    # one forward and backward per Adam iteration, the forward at x, the judging forward(s)
    judge = {"l2": (2, 3), "linf": (2, 3), "l0": (3, 4)}[name]
    extra_fwd = r.counts["forward"] - r.counts["backward"]
    assert ((extra_fwd == judge[0]) | (extra_fwd == judge[1])).all()
    assert (r.counts["backward"][:7] > 0).all()
    assert all(p.grad is None for p in mlp.model.parameters())
    if not targeted:  # the misclassified point: unchanged, success, no gradient spent
        assert r.success[7] and torch.equal(r.x_adv[7], x[7]) and r.counts["backward"][7] == 0
        assert r.extra["const"][7] == 0


@pytest.mark.parametrize("name", list(FAST))
def test_deterministic(name, results, points, mlp):
    x, y = points
    r = run(name, mlp.model, x, y)
    ref = results[name, False]
    assert torch.equal(r.x_adv, ref.x_adv) and torch.equal(r.success, ref.success)
    assert torch.equal(r.counts["backward"], ref.counts["backward"])


@pytest.mark.parametrize("name", list(FAST))
def test_batch_equals_one_by_one_in_float64(name, mlp):
    """Every point has its own constant, Adam state, abort test (and tau / mask): a batch
    gives what one-by-one runs give. In float64, so matrix-product rounding, which
    depends on the batch size, does not drift the trajectories apart."""
    model = copy.deepcopy(mlp.model).double()
    x, y = mlp.x[:4].double(), mlp.y[:4]
    fn = FAST[name][0]
    batch = fn(model, x, y, **TINY[name])
    assert batch.success.any()
    for i in range(len(x)):
        one = fn(model, x[i : i + 1], y[i : i + 1], **TINY[name])
        torch.testing.assert_close(one.x_adv, batch.x_adv[i : i + 1], atol=1e-10, rtol=0)
        assert one.success.item() == batch.success[i].item()
        assert one.counts["backward"].item() == batch.counts["backward"][i].item()


@pytest.mark.parametrize("name", list(FAST))
def test_mode_grads_and_no_grad_callers(name, mlp):
    """The model is used as given (its mode stays), parameters' .grad stay None, and a
    caller under torch.no_grad() with frozen parameters gets the same result."""
    x, y = mlp.x[:3], mlp.y[:3]
    model = copy.deepcopy(mlp.model).train()
    model.zero_grad(set_to_none=True)
    ref = FAST[name][0](model, x, y, **TINY[name])
    assert model.training and all(p.grad is None for p in model.parameters())
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        r = FAST[name][0](model, x, y, **TINY[name])
    assert torch.equal(r.x_adv, ref.x_adv) and torch.equal(r.success, ref.success)


@pytest.mark.parametrize("name", list(FAST))
def test_bad_inputs_raise(name, mlp):
    fn = FAST[name][0]
    x, y = mlp.x[:4], mlp.y[:4]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fn(mlp.model, x * 2 + 0.5, y)
    with pytest.raises(ValueError, match="entries"):
        fn(mlp.model, x, y[:3])
    with pytest.raises(ValueError, match="target equals the label"):
        fn(mlp.model, x, y, target=y.clone())
    with pytest.raises(ValueError, match="target holds class 10"):
        fn(mlp.model, x, y, target=torch.full_like(y, 10))
    with pytest.raises(ValueError, match="y holds class 12"):
        fn(mlp.model, x, torch.full_like(y, 12))
    probs = nn.Sequential(mlp.model, nn.Softmax(dim=1))
    with pytest.raises(ValueError, match="probabilities"):
        fn(probs, x, y)


BAD = {
    "l2": [
        (dict(kappa=-1.0), "kappa"), (dict(kappa=math.nan), "kappa"),
        (dict(binary_search_steps=0), "binary_search_steps"), (dict(binary_search_steps=2.5), "binary_search_steps"),
        (dict(max_iter=-1), "max_iter"), (dict(lr=0.0), "lr"), (dict(lr=math.inf), "lr"),
        (dict(initial_const=-1e-3), "initial_const"), (dict(abort_early=1), "abort_early"),
        (dict(adam="sgd"), "adam"), (dict(kappa="high"), "kappa"), (dict(lr=None), "lr"),
    ],
    "linf": [
        (dict(max_iter=0), "max_iter"), (dict(lr=-1.0), "lr"), (dict(initial_const=0.0), "initial_const"),
        (dict(largest_const=math.nan), "largest_const"), (dict(initial_const=30.0), "largest_const"),
        (dict(const_factor=1.0), "const_factor"), (dict(decrease_factor=1.0), "decrease_factor"),
        (dict(decrease_factor=0.0), "decrease_factor"), (dict(reduce_const="no"), "reduce_const"),
        (dict(abort_early=None), "abort_early"), (dict(adam="TF"), "adam"), (dict(const_factor="two"), "const_factor"),
    ],
    "l0": [
        (dict(max_iter=1.5), "max_iter"), (dict(lr=0.0), "lr"), (dict(initial_const=-1.0), "initial_const"),
        (dict(largest_const=1e-4), "largest_const"), (dict(const_factor=0.5), "const_factor"),
        (dict(independent_channels=0), "independent_channels"), (dict(reduce_const=None), "reduce_const"),
        (dict(abort_early="yes"), "abort_early"), (dict(adam=None), "adam"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("name, kwargs, match", [(n, k, m) for n, cases in BAD.items() for k, m in cases])
def test_bad_parameters_raise(name, kwargs, match, mlp):
    with pytest.raises(ValueError, match=match):
        FAST[name][0](mlp.model, mlp.x[:2], mlp.y[:2], **kwargs)


def test_two_class_logits_that_sum_to_one_are_accepted():
    """[1, 0] is a legitimate pair of logits; the probability check starts at 3 classes."""
    lin = nn.Linear(4, 2)
    with torch.no_grad():
        lin.weight.zero_()
        lin.bias.copy_(torch.tensor([1.0, 0.0]))
    model = nn.Sequential(nn.Flatten(), lin)
    r = cw_l2(model, torch.full((1, 1, 2, 2), 0.5), torch.tensor([0]), max_iter=5, binary_search_steps=1)
    assert not r.success.item()  # the model ignores its input


@pytest.mark.parametrize("name", list(FAST))
def test_progress_bar_only_on_request(name, mlp, capsys):
    fn = FAST[name][0]
    x, y = mlp.x[:1], mlp.y[:1]
    fn(mlp.model, x, y, **TINY[name])
    assert capsys.readouterr().err == ""
    fn(mlp.model, x, y, progress=True, **TINY[name])
    assert f"cw_{name}" in capsys.readouterr().err


# ------------------------------------------------------------------ shared pieces


def test_margin_masks_the_own_class_with_minus_inf():
    """All logits negative: a 0-mask (torchattacks' bug) would make the best other logit 0."""
    logits = torch.tensor([[-5.0, -3.0, -4.0], [-1.0, -9.0, -2.0]])
    own = torch.tensor([[False, True, False], [True, False, False]])
    torch.testing.assert_close(margin(logits, own, targeted=False), torch.tensor([-3.0 + 4.0, -1.0 + 2.0]))
    torch.testing.assert_close(margin(logits, own, targeted=True), torch.tensor([-4.0 + 3.0, -2.0 + 1.0]))


class Shift(nn.Module):
    def __init__(self, model, by):
        super().__init__()
        self.model, self.by = model, by

    def forward(self, x):
        return self.model(x) + self.by


@pytest.mark.parametrize("name", list(FAST))
def test_all_negative_logits(name, mlp):
    """Shifting every logit by -40 changes no margin: the attack finds the same points
    (up to the float32 rounding of the shifted logits)."""
    x, y = mlp.x[:6], mlp.y[:6]
    shifted = Shift(mlp.model, -40.0).eval()
    with torch.no_grad():
        assert (shifted(x) < 0).all(), "test setup: every logit must be negative"
    ref = FAST[name][0](mlp.model, x, y, **TINY[name])
    r = FAST[name][0](shifted, x, y, **TINY[name])
    assert ref.success.sum() >= 3
    assert torch.equal(r.success, ref.success)
    key = {"l2": "l2", "linf": "linf", "l0": "l0"}[name]
    assert r.norms[key][r.success].median() == pytest.approx(ref.norms[key][ref.success].median().item(), rel=0.05)


@pytest.mark.parametrize("style", ["tf", "torch"])
def test_adam_matches_its_definition(style):
    """"torch" is torch.optim.Adam's update; "tf" is TensorFlow 1's (epsilon added to the
    uncorrected sqrt(v)). Both with a per-point step counter, so rows restarted at
    different times follow their own bias correction."""
    g = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 5, generator=g, dtype=torch.float64) * 10.0 ** -torch.arange(3.0)[:, None] * 1e-7
             for _ in range(30)]  # fmt: skip
    mod, m, v = (torch.zeros(3, 5, dtype=torch.float64) for _ in range(3))
    for t, gr in enumerate(grads, 1):
        adam_step(mod, m, v, gr, torch.full((3,), t), 1e-2, style)
    if style == "torch":
        p = torch.zeros(3, 5, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.Adam([p], lr=1e-2)
        for gr in grads:
            p.grad = gr.clone()
            opt.step()
        torch.testing.assert_close(mod, p.detach(), rtol=1e-10, atol=1e-14)
    else:
        mm, vv, pp = np.zeros((3, 5)), np.zeros((3, 5)), np.zeros((3, 5))
        for t, gr in enumerate(grads, 1):
            gr = gr.numpy()
            lr_t = 1e-2 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
            mm = 0.9 * mm + 0.1 * gr
            vv = 0.999 * vv + 0.001 * gr * gr
            pp = pp - lr_t * mm / (np.sqrt(vv) + 1e-8)
        torch.testing.assert_close(mod, torch.from_numpy(pp), rtol=1e-10, atol=1e-14)


def test_tf_adam_moves_tiny_gradients_less_than_torch_adam():
    """Saturated pixels have gradients ~1e-6 times smaller in tanh space. TF's epsilon,
    added before the bias correction, damps them early on; PyTorch's does much less
    (the reference pitfall: issue #23 reports failures in a PyTorch port)."""
    g = torch.full((1, 4), 1e-9, dtype=torch.float64)
    moved = {}
    for style in ("tf", "torch"):
        mod, m, v = (torch.zeros(1, 4, dtype=torch.float64) for _ in range(3))
        for t in range(1, 11):
            adam_step(mod, m, v, g, t, 1e-2, style)
        moved[style] = -mod[0, 0].item()
    assert 0 < moved["tf"] < 0.2 * moved["torch"]
    # far from epsilon the two agree
    for style in ("tf", "torch"):
        mod, m, v = (torch.zeros(1, 4, dtype=torch.float64) for _ in range(3))
        for t in range(1, 11):
            adam_step(mod, m, v, g * 1e6, t, 1e-2, style)
        moved[style] = -mod[0, 0].item()
    assert moved["tf"] == pytest.approx(moved["torch"], rel=1e-3)


# --------------------------------------------------------------------------- L2


def affine_two_class(gaps, dim=64, seed=0):
    """A float64 2-class affine model and points inside the box with margins ``gaps``
    (logit 0 minus logit 1) toward target class 1. Along a = w_1 - w_0 the L2 problem
    ``||d||^2 + c * relu(gap - a.d)`` has its minimiser on the boundary exactly when
    c > c* = 2 gap / ||a||^2 (else at a.d = c ||a||^2 / 2, short of it), at distance
    d* = gap / ||a||. The tanh change of variables does not move the minimiser."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(dim, 2).double()
    base = torch.full((dim,), 0.5, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(0.3 * torch.randn(2, dim, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.tensor([1.0, 0.0], dtype=torch.float64) - lin.weight @ base)  # gap 1 at base
    a = (lin.weight[1] - lin.weight[0]).detach()
    gaps = torch.tensor(gaps, dtype=torch.float64)
    x = base - ((gaps - 1.0) / (a @ a))[:, None] * a
    minimiser = x + (gaps / (a @ a))[:, None] * a
    for z in (x, minimiser):
        assert ((z > 0.05) & (z < 0.95)).all(), "test setup: the box must be inactive"
    return nn.Sequential(nn.Flatten(), lin).eval(), x.view(-1, 1, 8, dim // 8), a


def simulate_search(c_star, steps, c=1e-3):
    """The reference's per-point binary search with the success rule c > c*."""
    lower, upper, tried = 0.0, 1e10, []
    for s in range(steps):
        if steps >= 10 and s == steps - 1:
            c = min(upper, 1e10)
        tried.append(c)
        if c > c_star:
            upper = min(upper, c)
            c = (lower + upper) / 2 if upper < 1e9 else c
        else:
            lower = max(lower, c)
            c = (lower + upper) / 2 if upper < 1e9 else c * 10
    return lower, upper, tried


@pytest.mark.parametrize("steps", [3, 5, 7])
def test_l2_binary_search_follows_the_reference(steps):
    """Success iff c > c* on the affine model (lr 3e-3 keeps Adam's jitter well inside
    the 10% margin between every tried c and c*): the bounds are the simulated ones and
    the kept distortion is the minimal one, d*."""
    gaps = [0.6, 1.3, 2.6]
    model, x, a = affine_two_class(gaps)
    a2 = float(a @ a)
    n = len(gaps)
    r = cw_l2(model, x, torch.zeros(n, dtype=torch.int64), target=torch.ones(n, dtype=torch.int64),
              binary_search_steps=steps, max_iter=1000, lr=3e-3)  # fmt: skip
    for i, gap in enumerate(gaps):
        c_star = 2 * gap / a2
        lower, upper, tried = simulate_search(c_star, steps)
        assert min(abs(math.log(c / c_star)) for c in tried) > 0.1, "test setup: no c near c*"
        assert r.extra["const_lower"][i].item() == pytest.approx(lower, rel=1e-12)
        assert r.extra["const_upper"][i].item() == pytest.approx(upper if upper < 1e9 else math.inf, rel=1e-12)
        assert r.success[i].item() == (upper < 1e9)
        if upper < 1e9:  # the kept point was found with one of the successful constants
            assert r.extra["const"][i].item() in [c for c in tried if c > c_star]
            d_star = gap / math.sqrt(a2)
            assert d_star <= r.norms["l2"][i].item() <= d_star * 1.001
            assert r.extra["best_l2"][i].item() == pytest.approx(r.norms["l2"][i].item(), abs=1e-6)


def test_l2_ten_or_more_steps_rerun_the_last_at_the_upper_bound():
    """Reference (and foolbox): with >= 10 search steps the last one uses c = upper, which
    is 1e10 for a point that never succeeded; from c0 = 1e-10 nine steps reach only 0.01."""
    model, x, _ = affine_two_class([0.6])
    y, t = torch.tensor([0]), torch.tensor([1])
    nine = cw_l2(model, x, y, target=t, binary_search_steps=9, max_iter=100, initial_const=1e-10)
    ten = cw_l2(model, x, y, target=t, binary_search_steps=10, max_iter=100, initial_const=1e-10)
    assert not nine.success.item() and ten.success.item()
    assert ten.extra["const"].item() == 1e10


def test_l2_failures_are_x_and_abort_early_saves_iterations(mlp):
    x, y = mlp.x[:8][mlp.correct[:8]], mlp.y[:8][mlp.correct[:8]]
    r = cw_l2(mlp.model, x, y, binary_search_steps=1, max_iter=50)  # c = 1e-3: too small
    assert not r.success.all()
    fail = ~r.success
    assert torch.equal(r.x_adv[fail], x[fail]) and (r.norms["l2"][fail] == 0).all()
    assert r.extra["best_l2"][fail].isinf().all() and r.extra["const"][fail].isnan().all()
    none = cw_l2(mlp.model, x, y, max_iter=0)
    assert torch.equal(none.x_adv, x) and not none.success.any() and (none.counts["backward"] == 0).all()
    kw = dict(binary_search_steps=3, max_iter=200, initial_const=0.1, lr=0.05)
    full = cw_l2(mlp.model, x, y, abort_early=False, **kw)
    early = cw_l2(mlp.model, x, y, **kw)
    assert (full.counts["backward"] == 3 * 200).all()
    assert (early.counts["backward"] <= full.counts["backward"]).all()
    assert early.counts["backward"].sum() < full.counts["backward"].sum()
    assert early.success.sum() >= full.success.sum() - 1


def test_l2_confidence(mlp):
    """Every success with kappa = 3 beats the best other logit by more than 3, and costs
    more distortion than kappa = 0."""
    x, y = mlp.x[:8][mlp.correct[:8]], mlp.y[:8][mlp.correct[:8]]
    target = (y + 4) % 10
    kw = dict(binary_search_steps=5, max_iter=100, initial_const=0.1, lr=0.1)
    r0 = cw_l2(mlp.model, x, y, target=target, **kw)
    r3 = cw_l2(mlp.model, x, y, target=target, kappa=3.0, **kw)
    with torch.no_grad():
        logits = mlp.model(r3.x_adv)
    own = nn.functional.one_hot(target, 10).bool()
    assert r3.success.sum() >= 5
    assert (margin(logits, own, targeted=True)[r3.success] < -3.0).all()
    both = r0.success & r3.success
    assert (r3.norms["l2"][both] > r0.norms["l2"][both]).all()
    # untargeted: the true logit ends more than kappa below the best other one
    u = cw_l2(mlp.model, x, y, kappa=3.0, **kw)
    with torch.no_grad():
        logits = mlp.model(u.x_adv)
    own = nn.functional.one_hot(y, 10).bool()
    assert (margin(logits, own, targeted=False)[u.success] < -3.0).all() and u.success.sum() >= 5


# ------------------------------------------------------------------------- Linf / L0


def test_linf_is_smaller_in_linf_than_l2(results):
    li, l2 = results["linf", False], results["l2", False]
    both = (li.success & l2.success)[:7]  # the 8th point is adversarial at x
    assert both.sum() >= 5
    assert (li.norms["linf"][:7][both] < l2.norms["linf"][:7][both]).all()


def test_l0_changes_fewer_pixels_than_l2(results):
    l0, l2 = results["l0", False], results["l2", False]
    both = (l0.success & l2.success)[:7]  # the 8th point is adversarial at x
    assert both.sum() >= 5
    n0, n2 = l0.norms["l0"][:7][both], l2.norms["l0"][:7][both]
    assert (n0 < n2).all() and n0.median() < 0.1 * n2.median()
    assert torch.equal(l0.extra["pixels"], l0.norms["l0"].long())  # one channel: pixels = coordinates


@pytest.mark.parametrize("targeted", [False, True])
def test_linf_bookkeeping(targeted, results, points):
    """tau ends at most 0.9 times the returned point's Linf (it shrinks after the last
    solution); the constant is initial_const times a power of 2 below largest_const."""
    _, kw = FAST["linf"]
    r = results["linf", targeted]
    s = r.success.clone()
    s[7] = s[7] and targeted  # the untargeted misclassified point is not optimised
    assert s.sum() >= 5
    linf = r.norms["linf"][s].double()
    assert (r.extra["tau"][s] <= kw["decrease_factor"] * linf + 1e-6).all()
    assert (r.extra["rounds"][s] >= 1).all()
    k = torch.log2(r.extra["const"][s] / kw["initial_const"])
    torch.testing.assert_close(k, k.round(), atol=1e-9, rtol=0)
    assert (k >= 0).all() and (r.extra["const"][s] < 20.0).all()


def test_l0_bookkeeping(results):
    _, kw = FAST["l0"]
    r = results["l0", True]
    s = r.success
    k = torch.log2(r.extra["const"][s] / kw["initial_const"])
    torch.testing.assert_close(k, k.round(), atol=1e-9, rtol=0)
    assert (k >= 0).all() and (r.extra["const"][s] < kw["largest_const"]).all()
    assert (r.extra["rounds"][s] >= 1).all()


def reference_freeze(valid, totalchange, equal_count):
    """The loop of l0_attack.py's attack_single, verbatim in numpy (one point)."""
    valid = valid.copy()
    did, why = 0, "ran out"
    for e in np.argsort(totalchange, kind="stable"):
        if np.all(valid[e]):
            did += 1
            valid[e] = 0
            if totalchange[e] > 0.01:
                why = "big change"
                break
            if did >= 0.3 * equal_count**0.5:
                why = "enough"
                break
    return valid, why


@pytest.mark.parametrize("independent", [False, True])
def test_l0_freezing_matches_the_reference_loop(independent):
    g = torch.Generator().manual_seed(0)
    k, ch, pix = 40, 3, 25
    groups = ch * pix if independent else pix
    valid = torch.rand(k, groups, generator=g) > 0.3
    valid[0] = False  # nothing left
    valid[1] = True
    expanded = valid if independent else valid[:, None, :].expand(k, ch, pix).reshape(k, -1)
    # magnitudes spread over decades, so both stopping rules (0.01 and 0.3 sqrt(changed)) fire
    scale_d = 10.0 ** torch.randint(-5, 1, (k, 1), generator=g)
    scale_g = 10.0 ** torch.randint(-3, 2, (k, 1), generator=g)
    delta = torch.where(expanded, torch.randn(k, ch * pix, generator=g, dtype=torch.float64) * scale_d, 0.0)
    grad = torch.where(expanded, torch.randn(k, ch * pix, generator=g, dtype=torch.float64) * scale_g, 0.0)
    ours = _freeze(valid, delta, grad, ch, independent)
    reasons = set()
    for i in range(k):
        d, gr = delta[i].view(ch, pix).numpy(), grad[i].view(ch, pix).numpy()
        equal_count = pix - np.sum(np.all(np.abs(d) < 1e-4, axis=0))
        if independent:
            total = (np.abs(delta[i]) * np.abs(grad[i])).numpy()
        else:
            total = np.abs(d.sum(0)) * np.abs(gr).sum(0)
        # the reference's frozen entries have total 0 and are skipped by np.all(valid[e])
        expected, why = reference_freeze(valid[i].numpy().astype(float), np.where(valid[i].numpy(), total, 0.0),
                                         equal_count)  # fmt: skip
        reasons.add(why)
        assert np.array_equal(ours[i].numpy(), expected.astype(bool)), i
    assert reasons == {"big change", "enough", "ran out"}, "test setup: every stopping rule must occur"
    assert (valid.sum(1) - ours.sum(1) >= torch.where(valid.any(1), 1, 0)).all()


def test_l0_independent_channels_on_colour_images():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    y = predict(model, x)
    kw = dict(max_iter=30, lr=5e-2, initial_const=0.1, largest_const=10.0)
    px = cw_l0(model, x, y, **kw)
    ch = cw_l0(model, x, y, independent_channels=True, **kw)
    assert px.success.all() and ch.success.all()
    for r in (px, ch):
        changed = ((r.x_adv - x).view(4, 3, -1) != 0).any(1).sum(1)
        assert torch.equal(r.extra["pixels"], changed)
    # whole pixels: each changed pixel tends to move in several channels
    assert (px.norms["l0"] > px.extra["pixels"]).any()


@pytest.mark.parametrize("name", ["linf", "l0"])
def test_abort_early_false_still_finds_solutions(name, mlp):
    """The reference never accepts a solution without abort_early (issue #39): every
    point fails. Here each constant runs in full and keeps its best passing iterate."""
    x, y = mlp.x[:2][mlp.correct[:2]], mlp.y[:2][mlp.correct[:2]]
    kw = {**TINY[name], "abort_early": False}
    if name == "l0":
        kw["largest_const"] = 8.0
    r = FAST[name][0](mlp.model, x, y, **kw)
    assert r.success.all()
    assert (r.counts["backward"] % kw["max_iter"] == 0).all()  # whole blocks only


# ------------------------------------------------------------- foolbox differential


def foolbox_run(model, x, y, target, stepsize=1e-2, **kw):
    fb = pytest.importorskip("foolbox")
    fmodel = fb.PyTorchModel(model, bounds=(0, 1))
    criterion = fb.criteria.TargetedMisclassification(target) if target is not None else y
    attack = fb.attacks.L2CarliniWagnerAttack(stepsize=stepsize, confidence=0.0, **kw)
    _, clipped, success = attack(fmodel, x, criterion, epsilons=None)
    model.zero_grad(set_to_none=True)
    # foolbox returns an all-zero image for failures (and may call it a success)
    return clipped, success & (clipped.flatten(1).abs().amax(1) > 0)


@pytest.mark.parametrize("targeted", [False, True])
@pytest.mark.parametrize(
    "fixture, n, steps, iters, c0, lr", [("mlp", 16, 4, 100, 0.1, 0.05), ("cnn", 6, 3, 40, 0.3, 0.1)]
)
def test_same_as_foolbox_where_they_coincide(fixture, n, steps, iters, c0, lr, targeted, request):
    """foolbox 3.3.4 runs the same algorithm with PyTorch's Adam and aborts on the loss
    summed over its batch; without the abort, and with adam="torch", the iterates are the
    same up to float rounding."""
    t = request.getfixturevalue(fixture)
    keep = t.correct[: 2 * n].nonzero().flatten()[:n]
    x, y = t.x[keep], t.y[keep]
    target = (y + 1) % 10 if targeted else None
    kw = dict(binary_search_steps=steps, initial_const=c0, abort_early=False)
    clipped, fsucc = foolbox_run(t.model, x, y, target, steps=iters, stepsize=lr, **kw)
    r = cw_l2(t.model, x, y, target=target, max_iter=iters, lr=lr, adam="torch", **kw)
    assert r.success.sum() >= 0.8 * n
    assert torch.equal(r.success, fsucc)
    torch.testing.assert_close(r.x_adv[r.success], clipped[r.success], atol=2e-4, rtol=0)
    fl2 = (clipped - x).flatten(1).norm(dim=1)
    assert r.norms["l2"][r.success].median() == pytest.approx(fl2[r.success].median().item(), rel=1e-3)


def test_same_as_foolbox_with_abort_early_one_point_at_a_time(mlp):
    """With abort_early foolbox tests its batch loss; at batch size 1 that is our
    per-point test, so each point must match foolbox run on that point alone."""
    keep = mlp.correct[:8].nonzero().flatten()[:3]
    x, y = mlp.x[keep], mlp.y[keep]
    kw = dict(binary_search_steps=4, initial_const=0.1, abort_early=True)
    r = cw_l2(mlp.model, x, y, max_iter=100, lr=0.05, adam="torch", **kw)
    assert r.success.all()
    for i in range(len(x)):
        clipped, fsucc = foolbox_run(mlp.model, x[i : i + 1], y[i : i + 1], None, steps=100, stepsize=0.05, **kw)
        assert fsucc.item() == r.success[i].item()
        if fsucc.item():
            torch.testing.assert_close(r.x_adv[i : i + 1], clipped, atol=2e-4, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("fixture", ["mlp", "cnn"])
def test_reference_adam_close_to_foolbox(fixture, request):
    """The reference's TF Adam against foolbox's PyTorch Adam, abort early on (foolbox's
    batch abort vs our per-point one): the same success, median L2 within 3%."""
    t = request.getfixturevalue(fixture)
    keep = t.correct[:48].nonzero().flatten()[:32]
    x, y = t.x[keep], t.y[keep]
    kw = dict(binary_search_steps=9, initial_const=1e-3)
    clipped, fsucc = foolbox_run(t.model, x, y, None, steps=300, abort_early=True, **kw)
    r = cw_l2(t.model, x, y, max_iter=300, **kw)
    assert abs(int(r.success.sum()) - int(fsucc.sum())) <= 1
    both = r.success & fsucc
    fl2 = (clipped - x).flatten(1).norm(dim=1)
    assert r.norms["l2"][both].median() == pytest.approx(fl2[both].median().item(), rel=0.03)


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(FAST))
def test_cuda_agrees_with_cpu(name, mlp):
    model = copy.deepcopy(mlp.model)
    x, y = mlp.x[:16], mlp.y[:16]
    cpu = run(name, model, x, y)
    gpu = run(name, model.cuda(), x.cuda(), y.cuda())
    assert gpu.x_adv.device.type == "cuda" and gpu.x_adv.min() >= 0 and gpu.x_adv.max() <= 1
    assert (gpu.success.cpu() == cpu.success).float().mean() >= 0.9
    both = gpu.success.cpu() & cpu.success
    key = {"l2": "l2", "linf": "linf", "l0": "l0"}[name]
    assert gpu.norms[key].cpu()[both].median() == pytest.approx(cpu.norms[key][both].median().item(), rel=0.1)
