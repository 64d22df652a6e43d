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


def test_target_cases_best_average_worst():
    from advlab.metrics import target_cases

    dist = [[1.0, 3.0, 2.0], [4.0, 9.0, 6.0]]
    ok = [[True, True, True], [True, False, True]]
    out = target_cases(dist, ok)
    assert out["best"] == {"mean": (1.0 + 4.0) / 2, "success": 1.0}
    assert out["average"]["mean"] == (2.0 + 5.0) / 2 and abs(out["average"]["success"] - 5 / 6) < 1e-12
    # the second image failed a target: its worst case does not exist (never a 9.0 or a 0)
    assert out["worst"] == {"mean": 3.0, "success": 0.5}
    none = target_cases([[1.0]], [[False]])
    assert none["best"]["mean"] is None and none["worst"]["success"] == 0.0


def test_hardness_from_run_equals_runs_with_each_budget():
    import torch

    from advlab.metrics import hardness_from_run, hardness_matrix, success_matrix

    src = torch.tensor([0, 0, 1, 1])
    tgt = torch.tensor([1, 1, 0, 0])
    ok = torch.tensor([True, True, True, False])
    iters = torch.tensor([1, 3, 2, 5])  # D = 10 features: budget g allows floor(10 g / 2) iterations
    frac = iters.double() * 2 / 10
    gammas = [0.2, 0.6]  # 1 and 3 iterations
    h = hardness_from_run(src, tgt, ok, iters, frac, gammas, num_features=10, num_classes=2)
    taus = torch.stack([success_matrix(src, tgt, ok & (iters <= 1), 2), success_matrix(src, tgt, ok & (iters <= 3), 2)])
    eps = torch.tensor([[[0.0, 0.2], [0.0, 0.0]], [[0.0, 0.4], [0.4, 0.0]]], dtype=torch.float64)
    torch.testing.assert_close(h, hardness_matrix(gammas, taus, distortions=eps), equal_nan=True)
    assert abs(float(h[0, 1]) - (1.0 - 0.5) * (0.4 + 0.2) / 2) < 1e-12


def test_mean_by_source_ignores_nan():
    import math

    import torch

    from advlab.metrics import mean_by_source

    a = torch.tensor([[math.nan, 0.2], [math.nan, 0.4], [0.6, math.nan]])
    out = mean_by_source(a, torch.tensor([0, 0, 1]), 3)
    assert abs(float(out[0, 1]) - 0.3) < 1e-6 and abs(float(out[1, 0]) - 0.6) < 1e-6
    assert math.isnan(float(out[0, 0])) and torch.isnan(out[2]).all()


# ------------------------------------------------------------------ destruction rate (Kurakin et al.)


def test_destruction_rate_on_hand_made_cases():
    import math

    from advlab.metrics import destruction_rate

    t = lambda *v: torch.tensor(v, dtype=torch.bool)  # noqa: E731
    clean = t(1, 1, 1, 0, 1, 1)
    adv = t(0, 0, 1, 0, 0, 0)  # point 2 was not fooled, point 3 was wrong already
    transformed = t(1, 0, 1, 1, 0, 1)
    # eligible: 0, 1, 4, 5; restored by T: 0 and 5
    assert destruction_rate(clean, adv, transformed) == 2 / 4
    assert destruction_rate(clean, adv, transformed, mask=t(1, 1, 1, 1, 0, 0)) == 1 / 2
    assert destruction_rate(clean, adv, t(0, 0, 0, 0, 0, 0)) == 0.0
    assert destruction_rate(clean, adv, t(1, 1, 1, 1, 1, 1)) == 1.0
    assert math.isnan(destruction_rate(clean, t(1, 1, 1, 1, 1, 1), transformed))  # nothing fooled
    with pytest.raises(ValueError, match="one length"):
        destruction_rate(clean, adv[:3], transformed)


def test_topk_correct_and_prefiltered_on_hand_made_logits():
    from advlab.metrics import prefiltered, topk_correct

    logits = torch.tensor([[5.0, 4.0, 3.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, 0.0]])
    y = torch.tensor([1, 1, 0])
    assert topk_correct(logits, y, 1).tolist() == [False, False, True]
    assert topk_correct(logits, y, 2).tolist() == [True, False, True]
    assert topk_correct(logits, y, 3).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="k must be in 1..4"):
        topk_correct(logits, y, 5)
    clean = torch.tensor([[9.0, 0.0], [9.0, 0.0], [0.3, 0.0], [9.0, 0.0]])
    adv = torch.tensor([[0.0, 9.0], [0.0, 0.2], [0.0, 9.0], [9.0, 0.0]])
    y = torch.tensor([0, 0, 0, 0])
    # confident clean & confidently wrong: only point 0 (1: adv unsure, 2: clean unsure, 3: not fooled)
    assert prefiltered(clean, adv, y, 0.8).tolist() == [True, False, False, False]
