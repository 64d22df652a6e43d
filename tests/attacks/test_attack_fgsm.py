import pytest
import torch
from torch import nn

from advlab.attacks import fgsm


def _mismatch(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> float:
    """Fraction of coordinates that differ by more than atol (sign ties of tiny gradients)."""
    return float(((a - b).abs() > atol).float().mean())


@pytest.mark.parametrize("fixture", ["cnn", "mlp"])
def test_matches_torchattacks_untargeted(fixture, request):
    torchattacks = pytest.importorskip("torchattacks")
    t = request.getfixturevalue(fixture)
    ours = fgsm(t.model, t.x, t.y, 0.1)
    ref = torchattacks.FGSM(t.model, eps=0.1)(t.x, t.y)
    assert _mismatch(ours.x_adv, ref) < 1e-4
    assert t.model.training is False


def test_matches_torchattacks_targeted(cnn):
    torchattacks = pytest.importorskip("torchattacks")
    target = (cnn.y + 3) % 10
    ours = fgsm(cnn.model, cnn.x, cnn.y, 0.1, target=target)
    atk = torchattacks.FGSM(cnn.model, eps=0.1)
    atk.set_mode_targeted_by_label(quiet=True)
    ref = atk(cnn.x, target)
    assert _mismatch(ours.x_adv, ref) < 1e-4
    with torch.no_grad():
        assert torch.equal(ours.success, cnn.model(ours.x_adv).argmax(1) == target)


def test_closed_form_on_linear_model():
    # logits = W x: the CE gradient sign is known in closed form for a 2-class model.
    lin = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 1.0, 1.5, 3.0]]))
    model = nn.Sequential(nn.Flatten(), lin)
    x = torch.full((1, 1, 2, 2), 0.5)
    y = torch.tensor([0])
    r = fgsm(model, x, y, 0.25)
    # d CE / dx for label 0 = (p1) * (w1 - w0): sign of w1 - w0 = [-, +, +, +]
    expected = (0.5 + 0.25 * torch.tensor([-1.0, 1.0, 1.0, 1.0])).view(1, 1, 2, 2)
    torch.testing.assert_close(r.x_adv, expected)
    torch.testing.assert_close(r.norms["linf"], torch.tensor([0.25]))
    assert r.counts["forward"].item() == 2 and r.counts["backward"].item() == 1


def test_linf_ball_and_strength(mlp):
    r = fgsm(mlp.model, mlp.x, mlp.y, 0.2)
    assert (r.norms["linf"] <= 0.2 + 1e-6).all()
    # a plain MLP loses most of its accuracy at eps = 0.2
    assert r.success[mlp.correct].float().mean() > 0.5
    with torch.no_grad():
        loss0 = nn.functional.cross_entropy(mlp.model(mlp.x), mlp.y)
        loss1 = nn.functional.cross_entropy(mlp.model(r.x_adv), mlp.y)
    assert loss1 > loss0


def test_cw_loss_runs_and_respects_ball(cnn):
    r = fgsm(cnn.model, cnn.x, cnn.y, 0.1, loss="cw", kappa=10.0)
    assert (r.norms["linf"] <= 0.1 + 1e-6).all()
    assert r.success.any()
