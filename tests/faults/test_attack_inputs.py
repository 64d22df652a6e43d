"""Every attack refuses bad inputs before any work, with a message saying what is wrong: NaN or inf,
values outside [0, 1], an empty batch, a wrong shape or dtype, a target equal to the label."""
from __future__ import annotations

import pytest
import torch

from advlab.attacks import (bim, bpda_eot_pgd, cw_l0, cw_l2, cw_linf, deepfool, fgsm, illc, jsma, lbfgs, one_pixel,
                            pgd)
from advlab.attacks.uap import universal_perturbation
from advlab.models import build_model

pytestmark = pytest.mark.faults_bad_input

# name -> call(model, x, y, target); small budgets: a bad input must fail before any of them is spent
ATTACKS = {
    "fgsm": lambda m, x, y, t: fgsm(m, x, y, 0.1, target=t),
    "pgd": lambda m, x, y, t: pgd(m, x, y, 0.1, steps=2, target=t),
    "bim": lambda m, x, y, t: bim(m, x, y, 0.1, steps=2, target=t),
    "illc": lambda m, x, y, t: illc(m, x, y, 0.1, steps=2),
    "deepfool": lambda m, x, y, t: deepfool(m, x, y, max_iter=2),
    "lbfgs": lambda m, x, y, t: lbfgs(m, x, y, target=t, binary_search_steps=1, max_iter=2),
    "jsma": lambda m, x, y, t: jsma(m, x, y, target=(y + 1) % 10 if t is None else t),
    "cw_l2": lambda m, x, y, t: cw_l2(m, x, y, target=t, binary_search_steps=1, max_iter=2),
    "cw_l0": lambda m, x, y, t: cw_l0(m, x, y, target=t, max_iter=2),
    "cw_linf": lambda m, x, y, t: cw_linf(m, x, y, target=t, max_iter=2),
    "one_pixel": lambda m, x, y, t: one_pixel(m, x, y, target=t, popsize=4, max_iter=1),
    "bpda_eot_pgd": lambda m, x, y, t: bpda_eot_pgd(m, x, y, 0.1, steps=2, target=t),
    "uap": lambda m, x, y, t: universal_perturbation(m, x, xi=1.0, max_passes=1),
}
TARGETED = [a for a in ATTACKS if a not in ("illc", "deepfool", "uap")]

BAD = {
    "NaN": (lambda x: x.index_put((torch.tensor([1]),), torch.tensor(float("nan"))), r"NaN|finite"),
    "+inf": (lambda x: x.index_put((torch.tensor([0]),), torch.tensor(float("inf"))), r"inf|finite"),
    "-inf": (lambda x: x.index_put((torch.tensor([2]),), torch.tensor(float("-inf"))), r"inf|finite"),
    "above 1": (lambda x: x * 1.5 + 0.2, r"\[0, 1\]"),
    "below 0": (lambda x: x - 0.5, r"\[0, 1\]"),
    "empty batch": (lambda x: x[:0], r"empty|non-empty"),
    "no batch dimension": (lambda x: x[0], r"4-D|NCHW"),
}


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    model = build_model("fc100_100", in_channels=1, image_size=28, num_classes=10, init_seed=0).eval()
    x = torch.rand(4, 1, 28, 28)
    return model, x, torch.tensor([0, 1, 2, 3])


@pytest.mark.parametrize("bad", BAD, ids=list(BAD))
@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_bad_inputs_are_refused(net, attack, bad):
    model, x, y = net
    change, message = BAD[bad]
    xb = change(x.clone())
    yb = y[: len(xb)] if xb.dim() == 4 else y
    with pytest.raises(ValueError, match=message):
        ATTACKS[attack](model, xb, yb, None)


@pytest.mark.parametrize("attack", TARGETED)
def test_target_equal_to_label_is_refused(net, attack):
    model, x, y = net
    target = (y + 1) % 10
    target[3] = y[3]
    with pytest.raises(ValueError, match=r"target equals the label y for points \[3\]"):
        ATTACKS[attack](model, x, y, target)


@pytest.mark.parametrize("attack", [a for a in ATTACKS if a != "uap"])
def test_integer_images_and_label_count_are_refused(net, attack):
    model, x, y = net
    with pytest.raises(ValueError, match="floating point"):
        ATTACKS[attack](model, (x * 255).to(torch.uint8), y, None)
    with pytest.raises(ValueError, match="entries|length|labels"):
        ATTACKS[attack](model, x, y[:3], None)
