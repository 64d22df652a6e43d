"""Invariants every attack must satisfy (DESIGN.md "Tests"), on a small MNIST CNN."""

import pytest
import torch

from advlab.attacks import (ATTACKS, AttackResult, bim, cw_l0, cw_l2, cw_linf, deepfool, fgsm, illc, jsma, lbfgs,
                            one_pixel, pgd)

# attack name -> (kwargs, batch result equals one-by-one result)
CASES = {
    "fgsm": dict(eps=0.1),
    "pgd-linf": dict(eps=0.1, steps=5, step_size=0.03),
    "pgd-l2": dict(eps=1.0, norm="l2", steps=5, step_size=0.3),
    "pgd-cw-restarts": dict(eps=0.1, steps=3, step_size=0.03, loss="cw", kappa=5.0, restarts=2),
    "deepfool-l2": dict(norm="l2", max_iter=10),
    "deepfool-linf": dict(norm="linf", max_iter=10),
    "bim": dict(eps=0.1, steps=5),
    "illc": dict(eps=0.1, steps=5),
}


def run(name, model, x, y, **override):
    kw = {**CASES[name], **override}
    fn = ATTACKS[name.split("-")[0]]
    if fn is deepfool:
        return fn(model, x, y, **kw)
    eps = kw.pop("eps")
    return fn(model, x, y, eps, **kw)


def test_registry():
    assert ATTACKS == {"fgsm": fgsm, "pgd": pgd, "deepfool": deepfool, "lbfgs": lbfgs, "bim": bim, "illc": illc,
                       "jsma": jsma, "cw_l2": cw_l2, "cw_l0": cw_l0, "cw_linf": cw_linf, "one_pixel": one_pixel}


@pytest.mark.parametrize("name", list(CASES))
def test_result_shape_bounds_and_inputs_untouched(name, cnn):
    x, y = cnn.x[:16], cnn.y[:16]
    x_copy, y_copy = x.clone(), y.clone()
    r = run(name, cnn.model, x, y)
    assert isinstance(r, AttackResult)
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy)
    assert r.x_adv.shape == x.shape and r.x_adv.dtype == x.dtype and not r.x_adv.requires_grad
    assert r.x_adv.min() >= 0 and r.x_adv.max() <= 1
    assert r.success.shape == (16,) and r.success.dtype == torch.bool
    assert set(r.norms) == {"l0", "l2", "linf"} and all(v.shape == (16,) for v in r.norms.values())
    assert set(r.counts) == {"forward", "backward"}
    assert all(v.shape == (16,) and v.dtype == torch.int64 for v in r.counts.values())
    assert (r.counts["forward"] >= 1).all()
    # success flags agree with a fresh evaluation of the returned points
    with torch.no_grad():
        pred = cnn.model(r.x_adv).argmax(1)
    assert torch.equal(r.success, pred != y)
    # norms are those of the returned (clipped) points
    d = (r.x_adv - x).flatten(1)
    torch.testing.assert_close(r.norms["l2"], d.norm(dim=1))
    torch.testing.assert_close(r.norms["linf"], d.abs().amax(1))


@pytest.mark.parametrize("name", list(CASES))
def test_batch_equals_one_by_one(name, cnn):
    x, y = cnn.x[:8], cnn.y[:8]
    kw = {"random_start": False} if name.startswith("pgd") else {}
    batch = run(name, cnn.model, x, y, **kw)
    for i in range(len(x)):
        one = run(name, cnn.model, x[i : i + 1], y[i : i + 1], **kw)
        torch.testing.assert_close(one.x_adv, batch.x_adv[i : i + 1], atol=1e-5, rtol=0)
        assert one.success.item() == batch.success[i].item()
        assert one.counts["forward"].item() == batch.counts["forward"][i].item()


@pytest.mark.parametrize("name", list(CASES))
def test_deterministic(name, cnn):
    x, y = cnn.x[:16], cnn.y[:16]
    a, b = run(name, cnn.model, x, y), run(name, cnn.model, x, y)
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.success, b.success)


@pytest.mark.parametrize("name", [n for n in CASES if not n.startswith("deepfool")])
def test_eps_zero_returns_x(name, cnn):
    x, y = cnn.x[:16], cnn.y[:16]
    r = run(name, cnn.model, x, y, eps=0.0)
    assert torch.equal(r.x_adv, x)
    assert (r.norms["linf"] == 0).all()


@pytest.mark.parametrize("name", list(CASES))
def test_model_state_untouched_and_works_under_no_grad(name, fresh_cnn):
    model = fresh_cnn
    model.train(False)
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    with torch.no_grad():
        r = run(name, model, x, y)
    assert r.x_adv.shape == x.shape
    assert all(p.grad is None for p in model.parameters())
    assert all(p.requires_grad for p in model.parameters())
    assert model.training is False
    model.train(True)
    run(name, model, x, y)
    assert model.training is True


@pytest.mark.faults_bad_input
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda x: x[:0], "empty"),
        (lambda x: x.clone().fill_(float("nan")), "NaN"),
        (lambda x: x * 2.0 + 0.5, r"\[0, 1\]"),
        (lambda x: x.flatten(1), "4-D"),
    ],
)
def test_bad_input_raises(name, bad, match, cnn):
    x = bad(cnn.x[:4])
    y = cnn.y[: len(x)]
    with pytest.raises(ValueError, match=match):
        run(name, cnn.model, x, y)


@pytest.mark.faults_bad_input
@pytest.mark.parametrize("name", list(CASES))
def test_label_length_mismatch_raises(name, cnn):
    with pytest.raises(ValueError, match="entries"):
        run(name, cnn.model, cnn.x[:4], cnn.y[:3])


@pytest.mark.faults_bad_input
@pytest.mark.parametrize("attack", [fgsm, pgd])
def test_target_equal_to_label_raises(attack, cnn):
    x, y = cnn.x[:4], cnn.y[:4]
    target = (y + 1) % 10
    target[2] = y[2]
    with pytest.raises(ValueError, match="target equals the label"):
        attack(cnn.model, x, y, 0.1, target=target)


@pytest.mark.faults_bad_input
@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m, x, y: fgsm(m, x, y, -0.1), "eps"),
        (lambda m, x, y: fgsm(m, x, y, 0.1, loss="mse"), "loss"),
        (lambda m, x, y: pgd(m, x, y, 0.1, norm="l1"), "norm"),
        (lambda m, x, y: pgd(m, x, y, float("nan")), "eps"),
        (lambda m, x, y: pgd(m, x, y, 0.1, restarts=0), "restarts"),
        (lambda m, x, y: deepfool(m, x, y, norm=0.5), "norm"),
        (lambda m, x, y: deepfool(m, x, y, norm="l3"), "norm"),
        (lambda m, x, y: deepfool(m, x, y, candidates=1), "candidates"),
        (lambda m, x, y: deepfool(m, x, y, overshoot=-1), "overshoot"),
    ],
)
def test_bad_parameters_raise(call, match, cnn):
    with pytest.raises(ValueError, match=match):
        call(cnn.model, cnn.x[:2], cnn.y[:2])


@pytest.mark.parametrize("name", ["pgd-linf", "deepfool-l2"])
def test_progress_bar_only_on_request(name, cnn, capsys):
    run(name, cnn.model, cnn.x[:2], cnn.y[:2])
    assert capsys.readouterr().err == ""
    run(name, cnn.model, cnn.x[:2], cnn.y[:2], progress=True)
    assert "it" in capsys.readouterr().err
