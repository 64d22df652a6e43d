"""Robustness summaries: definitions pinned in DESIGN.md, checked on hand-made points."""
import math

import numpy as np
import pytest
import torch

from advlab.metrics import attack_summary, rho_adv


def test_summary_counts_only_correct_points_and_successes():
    label = [0, 1, 2, 3, 4]
    clean = [0, 1, 2, 3, 9]       # the last point is misclassified clean
    adv = [5, 1, 7, 3, 9]         # points 0 and 2 fooled; 1 and 3 resisted
    l2 = [0.5, 0.0, 1.5, 0.0, 0.0]
    linf = [0.1, 0.0, 0.3, 0.0, 0.0]
    x_l2 = [5.0, 5.0, 10.0, 5.0, 5.0]
    s = attack_summary(label, clean, adv, l2, linf, x_l2)
    assert s["n_points"] == 5 and s["n_correct"] == 4
    assert s["success_rate"] == pytest.approx(0.5)
    assert s["robust_accuracy"] == pytest.approx(2 / 5)
    assert s["median_l2"] == pytest.approx(1.0)      # failed points are not zero perturbations
    assert s["mean_linf"] == pytest.approx(0.2)
    assert s["rho_adv"] == pytest.approx((0.5 / 5 + 1.5 / 10) / 2)
    assert math.isnan(s["rho_adv_centered"])
    c = attack_summary(label, clean, adv, l2, linf, x_l2, x_centered_l2=[2.5, 1, 5.0, 1, 1])
    assert c["rho_adv_centered"] == pytest.approx((0.5 / 2.5 + 1.5 / 5) / 2)


def test_no_success_gives_nan_norms_not_zero():
    s = attack_summary(torch.tensor([1, 2]), torch.tensor([1, 2]), torch.tensor([1, 2]),
                       np.zeros(2), np.zeros(2), np.ones(2))
    assert s["success_rate"] == 0.0 and s["robust_accuracy"] == 1.0
    assert math.isnan(s["median_l2"]) and math.isnan(s["rho_adv"])


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="differ in length"):
        attack_summary([0, 1], [0], [0, 1], [0, 0], [0, 0], [1, 1])


def test_rho_adv_is_mean_ratio():
    assert rho_adv([1.0, 2.0], [2.0, 2.0]) == pytest.approx(0.75)


def test_rms_distortion_is_szegedys_rms_not_l2():
    import torch

    from advlab.metrics import rms_distortion

    r = torch.zeros(2, 1, 28, 28)
    r[0] = 0.1  # every pixel moved by 0.1: RMS 0.1, L2 2.8
    r[1, 0, 0, 0] = 28.0  # one pixel: RMS 28 / sqrt(784) = 1
    torch.testing.assert_close(rms_distortion(r), torch.tensor([0.1, 1.0]))
