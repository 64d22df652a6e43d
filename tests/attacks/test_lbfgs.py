"""Box-constrained L-BFGS attack (Szegedy et al. 2014, cleverhans' objective)."""

import copy
import importlib
import math

import pytest
import torch
from torch import nn

from advlab.attacks import ATTACKS, deepfool, fgsm, lbfgs

pytestmark = pytest.mark.usefixtures("one_thread")


def as_float64(trained):
    """A float64 copy of a fixture model: its results do not depend on the batch size."""
    return copy.deepcopy(trained.model).double()


def objective(model, x, x_adv, target, const):
    """cleverhans' per-point objective c * CE(logits(x'), t) + ||x' - x||^2."""
    with torch.no_grad():
        ce = nn.functional.cross_entropy(model(x_adv), target, reduction="none")
    return const * ce + (x_adv - x).flatten(1).pow(2).sum(1)


# ---------------------------------------------------------------- binary linear model


def two_class_affine(gap: float = 0.1, dim: int = 16, seed: int = 0):
    """A float64 2-class affine model and x0 (box centre) with logits(x0) = [gap, 0].

    With a = w_1 - w_0 and a.x0 + beta = -gap, the objective for target 1 is
    c * softplus(-(a.z + beta)) + ||z - x0||^2, whose minimiser (inside the box) is
    z = x0 + lam * a with 2 lam = c * sigmoid(gap - lam ||a||^2). It reaches the
    boundary a.z + beta = 0 exactly at c* = 4 gap / ||a||^2, where the distortion is the
    distance to the hyperplane, d* = gap / ||a||.
    """
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(dim, 2).double()
    x0 = torch.full((1, 1, 4, dim // 4), 0.5, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(0.3 * torch.randn(2, dim, generator=g, dtype=torch.float64))
        lin.bias.copy_(torch.tensor([gap, 0.0], dtype=torch.float64) - lin.weight @ x0.flatten())
    a = (lin.weight[1] - lin.weight[0]).detach()
    return nn.Sequential(nn.Flatten(), lin).eval(), x0, a


def lam_of_c(c: float, gap: float, a2: float) -> float:
    """Root of 2 lam = c * sigmoid(gap - lam a2) (left side increasing, right decreasing)."""
    lo, hi = 0.0, c / 2
    for _ in range(200):
        mid = (lo + hi) / 2
        if 2 * mid < c / (1 + math.exp(-(gap - mid * a2))):
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def test_linear_inner_minimiser_matches_closed_form():
    gap = 0.1
    model, x0, a = two_class_affine(gap)
    a2 = float(a @ a)
    c = 2 * 4 * gap / a2  # twice c*: the minimiser is past the boundary
    r = lbfgs(model, x0, torch.tensor([0]), target=torch.tensor([1]), initial_const=c,
              binary_search_steps=1, tol=1e-10)  # fmt: skip
    expected = x0.flatten() + lam_of_c(c, gap, a2) * a
    assert r.success.item()
    torch.testing.assert_close(r.x_adv.flatten(), expected, atol=1e-8, rtol=0)
    assert r.extra["const"].item() == c
    assert ((expected > 0) & (expected < 1)).all(), "test setup: the box must be inactive"


def test_linear_binary_search_reaches_the_minimum_distortion():
    gap = 0.1
    model, x0, a = two_class_affine(gap)
    a2 = float(a @ a)
    c_star, d_star = 4 * gap / a2, gap / math.sqrt(a2)
    r = lbfgs(model, x0, torch.tensor([0]), target=torch.tensor([1]), binary_search_steps=25, tol=1e-10)
    assert r.success.item()
    l2 = r.norms["l2"].item()
    # any point of the target half-space is at least d* away; the search gets within 1e-4
    assert d_star * (1 - 1e-9) <= l2 <= d_star * (1 + 1e-4)
    delta = (r.x_adv - x0).flatten()
    assert float(delta @ a) / (delta.norm() * math.sqrt(a2)) > 1 - 1e-9  # along a: the shortest way
    assert c_star * (1 - 1e-9) <= r.extra["const"].item() <= c_star * (1 + 1e-4)


@pytest.mark.parametrize("steps", [1, 2, 3, 4, 5, 7])
@pytest.mark.parametrize("gap", [0.1, 0.5])
def test_linear_constant_follows_cleverhans_schedule(steps, gap):
    """The kept constant is the smallest successful c of cleverhans' search, simulated
    with the closed-form success rule c > c* (gap 0.1: c* = 0.093; gap 0.5: c* = 0.46)."""
    model, x0, a = two_class_affine(gap)
    c_star = 4 * gap / float(a @ a)
    c, lower, upper, kept = 1e-2, 0.0, 1e10, math.nan
    for _ in range(steps):
        assert abs(c - c_star) > 1e-3, "test setup: no tried c may sit on the boundary"
        if c > c_star:
            kept = c if math.isnan(kept) else min(kept, c)
            upper = min(upper, c)
            c = (lower + upper) / 2
        else:
            lower = max(lower, c)
            c = (lower + upper) / 2 if upper < 1e9 else c * 10
    r = lbfgs(model, x0, torch.tensor([0]), target=torch.tensor([1]), binary_search_steps=steps, tol=1e-10)
    assert r.success.item() == (not math.isnan(kept))
    if math.isnan(kept):
        assert math.isnan(r.extra["const"].item()) and torch.equal(r.x_adv, x0)
    else:
        assert r.extra["const"].item() == pytest.approx(kept, rel=1e-12)


# ------------------------------------------------------------- softmax regression (convex)


@pytest.fixture(scope="module")
def softmax_regression(mnist):
    """A 784 -> 10 softmax regression (Szegedy's FC10) trained briefly, in float64."""
    x_tr, y_tr, x_te, y_te = mnist
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        g = torch.Generator().manual_seed(0)
        for _ in range(150):
            i = torch.randint(0, len(x_tr), (64,), generator=g)
            loss = nn.functional.cross_entropy(model(x_tr[i]), y_tr[i])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.double().eval(), x_te[:6].double(), y_te[:6]


def test_softmax_regression_matches_a_long_scipy_optimisation(softmax_regression):
    """Convex objective: the minimiser is unique; scipy's L-BFGS-B run to tight tolerances
    finds it. The box is active (MNIST's black pixels), so this checks the bounds too.
    At the default tolerance the solver costs about what scipy's defaults cost."""
    opt = pytest.importorskip("scipy.optimize")
    model, x, y = softmax_regression
    target = (y + 1) % 10
    const = 20.0
    kw = dict(target=target, initial_const=const, binary_search_steps=1, max_iter=500)
    tight = lbfgs(model, x, y, tol=1e-9, **kw)
    default = lbfgs(model, x, y, **kw)
    assert tight.success.all() and default.success.all(), "test setup: every point must succeed at this c"
    f_tight = objective(model, x, tight.x_adv, target, const)
    f_default = objective(model, x, default.x_adv, target, const)
    for i in range(len(x)):
        xi, ti = x[i : i + 1], target[i : i + 1]

        def f_and_g(v, xi=xi, ti=ti):
            z = torch.tensor(v).view_as(xi).requires_grad_(True)
            f = const * nn.functional.cross_entropy(model(z), ti) + (z - xi).pow(2).sum()
            (g,) = torch.autograd.grad(f, z)
            return f.item(), g.flatten().numpy().astype(float)

        start, box = xi.flatten().numpy(), [(0.0, 1.0)] * 784
        v, f_ref, _ = opt.fmin_l_bfgs_b(f_and_g, start, bounds=box, m=20, factr=10.0, pgtol=1e-12, maxiter=20000)
        assert f_tight[i].item() == pytest.approx(f_ref, rel=1e-9)
        # strong convexity (modulus 2): ||z - z*||^2 <= f(z) - f(z*)
        torch.testing.assert_close(tight.x_adv[i].flatten(), torch.tensor(v), atol=1e-4, rtol=0)
        _, f_scipy, info = opt.fmin_l_bfgs_b(f_and_g, start, bounds=box)  # scipy's defaults
        assert f_default[i].item() == pytest.approx(f_ref, rel=1e-6)
        assert default.counts["backward"][i] <= 1.5 * info["funcalls"]
    on_bound = ((tight.x_adv == 0) & (x == 0)).flatten(1).sum(1)
    assert (on_bound > 100).all(), "test setup: the lower bound must be active on many pixels"


# ----------------------------------------------------------------------- trained networks


@pytest.mark.parametrize("fixture, n", [("mlp", 32), ("cnn", 12)])
def test_targeted_success_and_bounds(fixture, n, request):
    t = request.getfixturevalue(fixture)
    t.model.zero_grad(set_to_none=True)  # the session models are shared; peer-library tests leave grads
    x, y = t.x[:n], t.y[:n]
    target = (y + 1) % 10
    x_copy = x.clone()
    r = lbfgs(t.model, x, y, target=target)
    assert torch.equal(x, x_copy)
    assert r.success.float().mean() >= 0.9
    assert r.x_adv.dtype == x.dtype and r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    with torch.no_grad():
        pred = t.model(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred == target)
    assert torch.equal(r.extra["target"], target)
    # failures come back unchanged; successes keep the constant they were found with
    assert torch.equal(r.x_adv[~r.success], x[~r.success])
    assert r.extra["const"][~r.success].isnan().all()
    assert (r.extra["const"][r.success] > 0).all()
    assert all(p.grad is None for p in t.model.parameters())
    # one forward at x, one to judge the result, and one forward + backward per evaluation
    assert torch.equal(r.counts["forward"], r.counts["backward"] + 2)
    assert (r.counts["backward"] > 0).all()


def test_untargeted_aims_at_the_most_likely_wrong_class(mlp):
    x, y = mlp.x[:32], mlp.y[:32]
    r = lbfgs(mlp.model, x, y)
    with torch.no_grad():
        logits = mlp.model(x)
        pred = mlp.model(r.x_adv).argmax(1)
    expected = logits.scatter(1, y[:, None], -math.inf).argmax(1)
    assert torch.equal(r.extra["target"], expected)
    assert torch.equal(r.success, pred != y)
    assert r.success.float().mean() >= 0.9


def test_points_already_adversarial_are_returned_unchanged(mlp):
    wrong = (~mlp.correct).nonzero().flatten()[:4]
    right = mlp.correct.nonzero().flatten()[:4]
    assert len(wrong) == 4, "test setup: the fixture model misclassifies a few points"
    idx = torch.cat([wrong, right])
    x, y = mlp.x[idx], mlp.y[idx]
    r = lbfgs(mlp.model, x, y)
    assert r.success[:4].all()
    assert torch.equal(r.x_adv[:4], x[:4]) and (r.norms["l2"][:4] == 0).all()
    assert (r.extra["const"][:4] == 0).all()
    assert (r.counts["forward"][:4] == 2).all() and (r.counts["backward"][:4] == 0).all()
    assert (r.counts["backward"][4:] > 0).all()
    # targeted at the class the model already predicts: nothing to do either
    with torch.no_grad():
        pred = mlp.model(x[:4]).argmax(1)
    r = lbfgs(mlp.model, x[:4], y[:4], target=pred)
    assert r.success.all() and torch.equal(r.x_adv, x[:4]) and (r.counts["backward"] == 0).all()


def test_max_iter_zero_returns_x(mlp):
    x, y = mlp.x[:8][mlp.correct[:8]], mlp.y[:8][mlp.correct[:8]]
    r = lbfgs(mlp.model, x, y, max_iter=0)
    assert torch.equal(r.x_adv, x) and not r.success.any()


def test_distortion_close_to_deepfool_and_far_below_fgsm(mlp):
    """Near-minimal: with a fine search, the mean L2 is within 20% of DeepFool's (a
    near-minimal L2 attack; measured ratio 1.07) and every point is closer than a
    successful FGSM point at eps = 0.1 (whose L2 is about 0.1 * sqrt(pixels changed))."""
    keep = mlp.correct[:32]
    x, y = mlp.x[:32][keep], mlp.y[:32][keep]
    r = lbfgs(mlp.model, x, y, binary_search_steps=10)
    d = deepfool(mlp.model, x, y)
    assert r.success.all()
    both = r.success & d.success
    assert both.sum() >= 0.8 * len(x)
    assert r.norms["l2"][both].mean() <= 1.2 * d.norms["l2"][both].mean()
    f = fgsm(mlp.model, x, y, 0.1)
    both = r.success & f.success
    assert both.sum() >= 0.5 * len(x)
    assert (r.norms["l2"][both] < f.norms["l2"][both]).all()


def test_more_search_steps_never_increase_the_distortion(mlp):
    """Every search step restarts from x, so the first k steps of a longer search are
    the same computations: the kept distortion can only go down, success only up, and
    the constant changes exactly where a smaller successful distortion was found."""
    x, y = mlp.x[:16], mlp.y[:16]
    target = (y + 2) % 10
    prev = None
    for steps in (2, 3, 4, 6):
        r = lbfgs(mlp.model, x, y, target=target, binary_search_steps=steps)
        l2 = torch.where(r.success, r.norms["l2"], torch.full_like(r.norms["l2"], math.inf))
        if prev is not None:
            p_l2, p_const = prev
            assert (l2 <= p_l2).all()
            improved = l2 < p_l2
            same = ~improved & torch.isfinite(l2)
            assert torch.equal(r.extra["const"][same], p_const[same])
            assert not torch.isin(r.extra["const"][improved], p_const[improved]).any()
        prev = (l2, r.extra["const"])
    assert torch.isfinite(prev[0]).float().mean() >= 0.9


def test_deterministic(mlp):
    x, y = mlp.x[:16], mlp.y[:16]
    a, b = lbfgs(mlp.model, x, y), lbfgs(mlp.model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)
    assert torch.equal(a.counts["forward"], b.counts["forward"])
    assert torch.equal(a.extra["const"].nan_to_num(-1), b.extra["const"].nan_to_num(-1))


def test_works_under_no_grad_and_with_frozen_parameters(mlp):
    """The pipeline freezes the parameters; callers may hold torch.no_grad()."""
    x, y = mlp.x[:4], mlp.y[:4]
    ref = lbfgs(mlp.model, x, y, binary_search_steps=4)
    model = copy.deepcopy(mlp.model)
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        r = lbfgs(model, x, y, binary_search_steps=4)
    assert torch.equal(r.x_adv, ref.x_adv) and torch.equal(r.success, ref.success)
    assert r.success.any()


def test_batch_equals_one_by_one_in_float64(mlp):
    """Each point has its own L-BFGS memory, line search and stopping test. In float32 a
    matrix product's rounding depends on the batch size and the trajectories drift
    apart (by about 5e-4 here); in float64 they agree."""
    model = as_float64(mlp)
    x, y = mlp.x[:6].double(), mlp.y[:6]
    target = (y + 3) % 10
    batch = lbfgs(model, x, y, target=target)
    for i in range(len(x)):
        one = lbfgs(model, x[i : i + 1], y[i : i + 1], target=target[i : i + 1])
        torch.testing.assert_close(one.x_adv, batch.x_adv[i : i + 1], atol=1e-8, rtol=0)
        assert one.success.item() == batch.success[i].item()


# ---------------------------------------------------------------------------- the API


def test_registered():
    assert ATTACKS["lbfgs"] is lbfgs


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(initial_const=0.0), "initial_const"),
        (dict(initial_const=-1.0), "initial_const"),
        (dict(initial_const=math.inf), "initial_const"),
        (dict(binary_search_steps=0), "binary_search_steps"),
        (dict(binary_search_steps=2.5), "binary_search_steps"),
        (dict(max_iter=-1), "max_iter"),
        (dict(tol=-1e-5), "tol"),
        (dict(tol=math.nan), "tol"),
    ],
)
def test_bad_parameters_raise(kwargs, match, mlp):
    with pytest.raises(ValueError, match=match):
        lbfgs(mlp.model, mlp.x[:2], mlp.y[:2], **kwargs)


def test_bad_inputs_raise(mlp):
    x, y = mlp.x[:4], mlp.y[:4]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        lbfgs(mlp.model, x * 2 + 0.5, y)
    with pytest.raises(ValueError, match="entries"):
        lbfgs(mlp.model, x, y[:3])
    with pytest.raises(ValueError, match="target equals the label"):
        lbfgs(mlp.model, x, y, target=y.clone())
    with pytest.raises(ValueError, match="target holds class 10"):
        lbfgs(mlp.model, x, y, target=torch.full_like(y, 10))
    with pytest.raises(ValueError, match="y holds class 12"):
        lbfgs(mlp.model, x, torch.full_like(y, 12))


def test_progress_bar_only_on_request(mlp, capsys):
    x, y = mlp.x[:2], mlp.y[:2]
    lbfgs(mlp.model, x, y, binary_search_steps=1)
    assert capsys.readouterr().err == ""
    lbfgs(mlp.model, x, y, binary_search_steps=1, progress=True)
    assert "lbfgs" in capsys.readouterr().err


def test_binary_search_keeps_the_smallest_successful_distortion(monkeypatch):
    """Keep the smallest successful distortion, not the last success. On the linear
    model a smaller c normally gives a smaller distortion, so one search step's result is
    pushed three times further along its direction: still successful, now larger."""
    module = importlib.import_module("advlab.attacks.lbfgs")  # the package attribute is the function

    model, x0, _ = two_class_affine(0.5)  # c* = 0.46: c = 1 succeeds (step 3), then 0.55 (step 4)
    real, calls = module._minimize, []

    def inflated(fun, z0, **kw):
        z, f, logits, it = real(fun, z0, **kw)
        calls.append(1)
        if len(calls) == 4:
            z = (z0 + 3 * (z - z0)).clamp(0, 1)
            f, _, logits = fun(torch.arange(len(z)), z)
        return z, f, logits, it

    monkeypatch.setattr(module, "_minimize", inflated)
    y, t = torch.tensor([0]), torch.tensor([1])
    r4 = lbfgs(model, x0, y, target=t, binary_search_steps=4, tol=1e-10)
    calls.clear()
    r3 = lbfgs(model, x0, y, target=t, binary_search_steps=3, tol=1e-10)
    assert r3.success.item() and r4.success.item()
    assert r3.extra["const"].item() == 1.0
    assert r4.extra["const"].item() == 1.0  # the inflated step (c = 0.55) is not kept
    assert torch.equal(r4.x_adv, r3.x_adv)


@pytest.mark.gpu
def test_cuda_agrees_with_cpu(mlp):
    model = copy.deepcopy(mlp.model)
    x, y = mlp.x[:16], mlp.y[:16]
    target = (y + 1) % 10
    cpu = lbfgs(model, x, y, target=target)
    gpu = lbfgs(model.cuda(), x.cuda(), y.cuda(), target=target.cuda())
    assert gpu.x_adv.device.type == "cuda" and gpu.x_adv.min() >= 0 and gpu.x_adv.max() <= 1
    assert (gpu.success.cpu() == cpu.success).float().mean() >= 0.9
    both = gpu.success.cpu() & cpu.success
    assert gpu.norms["l2"].cpu()[both].mean() == pytest.approx(cpu.norms["l2"][both].mean().item(), rel=0.05)
