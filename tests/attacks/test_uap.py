"""Universal perturbations (Algorithm 1): projection, fooling rate against clean predictions,
zero norm, determinism, and a UAP that beats random noise of its norm on a trained CNN."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.attacks.uap import (
    fooling_rate,
    perturb,
    project,
    random_perturbation,
    scale_to_norm,
    universal_perturbation,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("p", ["l2", "linf"])
def test_projection_keeps_the_norm_bound_and_leaves_inner_points(p):
    g = torch.Generator().manual_seed(0)
    order = 2 if p == "l2" else math.inf
    for scale in (0.01, 1.0, 50.0):
        v = scale * torch.randn(1, 28, 28, generator=g)
        out = project(v, 2.0 if p == "l2" else 0.1, p)
        bound = 2.0 if p == "l2" else 0.1
        assert float(torch.linalg.vector_norm(out.flatten(), ord=order)) <= bound * (1 + 1e-6)
        if float(torch.linalg.vector_norm(v.flatten(), ord=order)) <= bound:
            assert torch.equal(out, v)  # already inside: untouched
    stack = 10 * torch.randn(4, 3, 8, 8, generator=g)
    norms = torch.linalg.vector_norm(project(stack, 1.5, p).flatten(1), ord=order, dim=1)
    assert bool((norms <= 1.5 * (1 + 1e-6)).all())


def test_l2_projection_is_the_closest_point_of_the_ball():
    v = torch.tensor([[[3.0, 4.0]]])  # norm 5
    torch.testing.assert_close(project(v, 1.0, "l2"), torch.tensor([[[0.6, 0.8]]]))
    torch.testing.assert_close(project(v, 1.0, "linf"), torch.tensor([[[1.0, 1.0]]]))


@pytest.mark.parametrize("p, order", [("l2", 2), ("linf", math.inf)])
@pytest.mark.parametrize("kind", ["sphere", "gaussian"])
def test_random_and_rescaled_perturbations_have_exactly_the_norm(p, order, kind):
    v = random_perturbation((1, 28, 28), 3.0, p, kind=kind, generator=torch.Generator().manual_seed(1))
    assert math.isclose(float(torch.linalg.vector_norm(v.flatten(), ord=order)), 3.0, rel_tol=1e-5)
    w = scale_to_norm(torch.randn(1, 28, 28), 0.5, p)
    assert math.isclose(float(torch.linalg.vector_norm(w.flatten(), ord=order)), 0.5, rel_tol=1e-5)
    assert torch.equal(scale_to_norm(torch.zeros(1, 4, 4), 1.0, p), torch.zeros(1, 4, 4))


class Threshold(nn.Module):
    """Class 1 iff the mean pixel exceeds 0.5: a perturbation's effect is known exactly."""

    def forward(self, x):
        m = x.flatten(1).mean(1, keepdim=True) - 0.5
        return torch.cat([-m, m], 1) * 10


def test_fooling_rate_counts_changes_against_the_clean_prediction_not_the_label():
    model = Threshold()
    x = torch.cat([torch.full((3, 1, 4, 4), 0.45), torch.full((1, 1, 4, 4), 0.7)])
    y = torch.tensor([1, 1, 1, 1])  # three clean errors: irrelevant to the fooling rate
    assert fooling_rate(model, x, torch.zeros(1, 4, 4)) == 0.0
    # +0.1 everywhere flips the three dark images (0.45 -> 0.55), not the bright one
    assert fooling_rate(model, x, torch.full((1, 4, 4), 0.1)) == 0.75
    del y


def test_perturb_clips_to_the_box():
    x = torch.tensor([[[[0.0, 0.95]]]])
    torch.testing.assert_close(perturb(x, torch.tensor([[[-0.2, 0.2]]])), torch.tensor([[[[0.0, 1.0]]]]))


def test_zero_norm_uap_fools_nothing(cnn):
    r = universal_perturbation(cnn.model, cnn.x[:64], xi=0.0, max_passes=2)
    assert torch.equal(r.v, torch.zeros_like(r.v))
    assert r.fooling_rate == 0.0 and r.history == [0.0, 0.0]


MARGIN = {"l2": 0.1, "linf": 0.05}


@pytest.mark.parametrize("p, xi", [("l2", 4.0), ("linf", 0.2)])
def test_uap_is_within_the_ball_deterministic_and_beats_random_noise(cnn, mnist, p, xi):
    x = mnist[0][:200]  # built on training images, judged on unseen test images
    kw = dict(xi=xi, p=p, delta=0.2, max_passes=3, generator=torch.Generator().manual_seed(3))
    a = universal_perturbation(cnn.model, x, **kw)
    b = universal_perturbation(cnn.model, x, **{**kw, "generator": torch.Generator().manual_seed(3)})
    assert torch.equal(a.v, b.v) and a.history == b.history
    order = 2 if p == "l2" else math.inf
    assert float(torch.linalg.vector_norm(a.v.flatten(), ord=order)) <= xi * (1 + 1e-5)
    assert a.fooling_rate == max(a.history) == fooling_rate(cnn.model, x, a.v)  # the best pass is kept
    noise = random_perturbation(a.v.shape, xi, p, generator=torch.Generator().manual_seed(0))
    unseen = mnist[2][:400]
    assert fooling_rate(cnn.model, unseen, a.v) > 2 * fooling_rate(cnn.model, unseen, noise) + MARGIN[p]


def test_chunk_one_is_the_point_by_point_algorithm(cnn):
    r = universal_perturbation(cnn.model, cnn.x[:40], xi=3.0, chunk=1, max_passes=1)
    assert r.passes == 1 and r.counts["checks"] == 40


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(xi=-1.0), "xi must be"),
        (dict(xi=1.0, p=3), "p must be"),
        (dict(xi=1.0, delta=1.0), "delta"),
        (dict(xi=1.0, chunk=0), "chunk"),
        (dict(xi=1.0, max_passes=0), "max_passes"),
    ],
)
def test_bad_parameters_raise(cnn, kw, match):
    with pytest.raises(ValueError, match=match):
        universal_perturbation(cnn.model, cnn.x[:4], **kw)


def test_minimal_perturbations_and_their_normals(cnn):
    from advlab.attacks.uap import boundary_normals, minimal_perturbations

    x = cnn.x[:32]
    r, ok = minimal_perturbations(cnn.model, x, max_iter=50)
    assert r.shape == x.shape and bool(ok.all())
    with torch.no_grad():
        assert bool((cnn.model((x + r).clamp(0, 1)).argmax(1) != cnn.model(x).argmax(1)).all())
    normals = boundary_normals(r)
    torch.testing.assert_close(torch.linalg.vector_norm(normals, dim=1), torch.ones(32))


def test_mean_and_singular_directions_at_the_same_norm():
    from advlab.attacks.uap import mean_direction, singular_directions, singular_values

    g = torch.Generator().manual_seed(0)
    direction = torch.zeros(1, 4, 4)
    direction[0, 1, 2] = 1.0
    # rows = +-3 * direction + small noise: the top singular vector is +-direction
    signs = torch.tensor([1.0, -1.0] * 10).view(-1, 1, 1, 1)
    rows = 3 * signs * direction + 0.01 * torch.randn(20, 1, 4, 4, generator=g)
    dirs = singular_directions(rows, 2, 2.0, "l2")
    assert dirs.shape == (4, 1, 4, 4)
    torch.testing.assert_close(torch.linalg.vector_norm(dirs.flatten(1), dim=1), torch.full((4,), 2.0))
    torch.testing.assert_close(dirs[0], -dirs[1])
    assert abs(float((dirs[0].flatten() @ direction.flatten()) / 2.0)) > 0.99
    m = mean_direction(rows.abs(), 0.3, "linf")
    assert math.isclose(float(m.abs().max()), 0.3, rel_tol=1e-6)
    sv = singular_values(rows)
    assert sv[0] > 10 * sv[1]


def test_the_inner_step_is_the_minimal_l2_perturbation_whatever_p(cnn):
    # the paper's line 7 is arg min ||r||_2 for both p; inner_norm="linf" is the variant kept for comparison
    x = cnn.x[:48]
    kw = dict(xi=0.2, p="linf", max_passes=1, generator=torch.Generator().manual_seed(0))
    default = universal_perturbation(cnn.model, x, **kw)
    again = {**kw, "generator": torch.Generator().manual_seed(0)}
    explicit = universal_perturbation(cnn.model, x, inner_norm="l2", **again)
    again = {**kw, "generator": torch.Generator().manual_seed(0)}
    linf = universal_perturbation(cnn.model, x, inner_norm="linf", **again)
    assert torch.equal(default.v, explicit.v)
    assert not torch.equal(default.v, linf.v)
    # DeepFool-linf steps are sign-like: they saturate far more coordinates at +-xi
    saturated = lambda v: float((v.abs() >= 0.2 - 1e-6).float().mean())  # noqa: E731
    assert saturated(linf.v) > saturated(default.v)


def test_subspace_perturbations_lie_in_the_span_at_the_norm():
    from advlab.attacks.uap import subspace_perturbation

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(64, 3, generator=g)).Q.T  # 3 orthonormal rows in R^64
    rows = (torch.randn(40, 3, generator=g) * torch.tensor([5.0, 3.0, 2.0])) @ basis
    out = subspace_perturbation(rows.view(40, 1, 8, 8), 3, 1.5, "l2", count=6, generator=g)
    assert out.shape == (6, 1, 8, 8)
    flat = out.flatten(1)
    torch.testing.assert_close(torch.linalg.vector_norm(flat, dim=1), torch.full((6,), 1.5))
    residual = flat - (flat @ basis.T) @ basis  # nothing outside the span of the rows
    assert float(residual.abs().max()) < 1e-4
    linf = subspace_perturbation(rows.view(40, 1, 8, 8), 2, 0.1, "linf", count=2, generator=g)
    torch.testing.assert_close(linf.flatten(1).abs().max(1).values, torch.full((2,), 0.1))
    with pytest.raises(ValueError, match="dim"):
        subspace_perturbation(rows.view(40, 1, 8, 8), 0, 1.0)


def test_fooled_labels_count_clean_to_perturbed_changes_only():
    from advlab.attacks.uap import fooled_labels

    model = Threshold()
    x = torch.cat([torch.full((3, 1, 4, 4), 0.45), torch.full((2, 1, 4, 4), 0.7)])
    m = fooled_labels(model, x, torch.full((1, 4, 4), 0.1), num_classes=2)
    assert m.tolist() == [[0, 3], [0, 0]]  # three 0 -> 1, the bright ones stay 1 (not counted)
    assert int(fooled_labels(model, x, torch.zeros(1, 4, 4), num_classes=2).sum()) == 0
    # against the given clean predictions: all five points "were" 0 and read 1 on x + v
    given = torch.zeros(5, dtype=torch.long)
    m = fooled_labels(model, x, torch.full((1, 4, 4), 0.1), clean_pred=given, num_classes=2)
    assert m.tolist() == [[0, 5], [0, 0]]


def test_checks_within_a_pass_stop_early_and_keep_the_best(cnn):
    x = cnn.x[:96]
    kw = dict(xi=3.0, max_passes=2, chunk=8, delta=0.0, generator=torch.Generator().manual_seed(0))
    r = universal_perturbation(cnn.model, x, checks_per_pass=4, **kw)
    assert r.passes == 2 and len(r.history) == 8  # delta 0: never stops early
    assert r.fooling_rate == max(r.history) == fooling_rate(cnn.model, x, r.v)
    last = universal_perturbation(cnn.model, x, checks_per_pass=4, keep_best=False,
                                  **{**kw, "generator": torch.Generator().manual_seed(0)})  # fmt: skip
    assert last.fooling_rate == last.history[-1]
    # a target reached at a check inside the first pass stops the algorithm there
    early = universal_perturbation(cnn.model, x, xi=8.0, max_passes=3, chunk=8, delta=0.5, checks_per_pass=6)
    assert early.passes == 1 and early.fooling_rate >= 0.5 and len(early.history) < 6


def test_energy_dimension_counts_the_directions_holding_the_share():
    from advlab.attacks.uap import energy_dimension

    assert energy_dimension(torch.tensor([3.0, 1.0, 0.0]), 0.9) == 1  # 9 of 10
    assert energy_dimension(torch.tensor([2.0, 2.0, 1.0, 1.0]), 0.9) == 3  # 8 of 10 after two
    assert energy_dimension(torch.ones(10), 0.9) == 9
