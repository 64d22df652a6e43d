"""advlab.defenses: the obfuscated-gradient defences of Athalye et al. 2018 and BPDA plumbing."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab.defenses import (
    JPEG,
    SAP,
    BitDepth,
    LIDDetector,
    RandomResizePad,
    Thermometer,
    TVMinimization,
    bpda,
    build_thermometer_model,
    jpeg_round_trip,
    layer_outputs,
    lid_features,
    mle_lid,
    random_resize_pad,
    reduce_bit_depth,
    sap_prune,
    straight_through,
    thermometer_encode,
    thermometer_relax,
    tv_reconstruct,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_cnn(in_channels: int = 1, size: int = 28, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Conv2d(in_channels, 4, 3, stride=2), nn.ReLU(),
            nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), nn.Linear(16, 10),
        ).eval()  # fmt: skip


def init_lazy(model: nn.Module, shape) -> nn.Module:
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        model(torch.zeros(1, *shape))
    return model


def smooth_images(n: int = 4, size: int = 28, seed: int = 0) -> torch.Tensor:
    """Blurry blobs in [0, 1]: the kind of image TV and JPEG preserve well."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, size // 4, size // 4, generator=g)
    return nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


def defenses() -> dict[str, nn.Module]:
    return {
        "thermometer": Thermometer(init_lazy(tiny_cnn(16), (16, 28, 28)), levels=16),
        "bitdepth": BitDepth(init_lazy(tiny_cnn(), (1, 28, 28)), bits=3),
        "jpeg": JPEG(init_lazy(tiny_cnn(), (1, 28, 28)), quality=75),
        "tv": TVMinimization(init_lazy(tiny_cnn(), (1, 28, 28)), steps=20, seed=1),
        "sap": SAP(init_lazy(tiny_cnn(), (1, 28, 28)), seed=2),
        "resize_pad": RandomResizePad(init_lazy(tiny_cnn(size=32), (1, 32, 32)), out_size=32, seed=3),
    }


# ------------------------------------------------------------------ every defence


@pytest.mark.parametrize("name", list(defenses()))
def test_defense_logits_shape_dtype_and_input_untouched(name):
    d = defenses()[name]
    x = smooth_images(5)
    x_copy = x.clone()
    for model in (d, d.bpda()):
        out = model(x)
        assert out.shape == (5, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(x, x_copy)
    z = d.transform(x)
    assert z.dtype == x.dtype and z.min() >= 0 and z.max() <= 1
    assert z.shape[0] == 5


@pytest.mark.parametrize("name", list(defenses()))
def test_bpda_view_forward_is_the_exact_defence(name):
    """Same seed, same draws: the BPDA view's logits equal the exact defence's."""
    exact, view = defenses()[name], defenses()[name].bpda()
    x = smooth_images(3)
    with torch.no_grad():
        torch.testing.assert_close(view(x), exact(x), atol=1e-6, rtol=0)
    assert view.defense.classifier is not None and isinstance(view.defense, type(exact))


@pytest.mark.parametrize("name", ["tv", "sap", "resize_pad"])
def test_random_defences_are_fresh_per_call_and_seeded(name):
    a, b = defenses()[name], defenses()[name]
    x = smooth_images(4)
    with torch.no_grad():
        a1, a2, b1 = a.transform(x), a.transform(x), b.transform(x)
        if name == "sap":  # SAP lives inside the network: compare logits
            a1, a2, b1 = a(x), a(x), b(x)
    assert torch.equal(a1, b1)  # same seed, same first draw
    assert not torch.equal(a1, a2)  # a new draw on every call
    a.reseed(a.seed)
    with torch.no_grad():
        again = a(x) if name == "sap" else a.transform(x)
    assert torch.equal(again, a1)


def test_bad_parameters_raise():
    clf = tiny_cnn()
    for make, match in [
        (lambda: Thermometer(clf, levels=1), "levels"),
        (lambda: Thermometer(clf, levels=16, relax_shift=2.0), "relax_shift"),
        (lambda: BitDepth(clf, bits=0), "bits"),
        (lambda: BitDepth(clf, bits=9), "bits"),
        (lambda: JPEG(clf, quality=0), "quality"),
        (lambda: TVMinimization(clf, keep_prob=0.0), "keep_prob"),
        (lambda: TVMinimization(clf, lambda_tv=-1.0), "lambda_tv"),
        (lambda: TVMinimization(clf, steps=0), "steps"),
        (lambda: SAP(clf, ratio=0.0), "ratio"),
        (lambda: SAP(clf, layers=["nope"]), "nope"),
        (lambda: RandomResizePad(clf, out_size=2), "out_size"),
        (lambda: RandomResizePad(clf, out_size=32, min_size=40), "min_size"),
        (lambda: RandomResizePad(clf, out_size=32, pad_value=2.0), "pad_value"),
    ]:
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(ValueError, match="out_size"):
        RandomResizePad(clf, out_size=28).transform(torch.zeros(1, 1, 28, 28))
    with pytest.raises(ValueError, match="channels"):
        jpeg_round_trip(torch.zeros(1, 2, 8, 8))


# ------------------------------------------------------------------ BPDA plumbing


def test_straight_through_value_is_exact_bit_for_bit_and_gradient_is_approx():
    x = torch.linspace(0, 1, 101, dtype=torch.float32).requires_grad_(True)
    exact = (x > 0.3).float()
    approx = 3.0 * x
    out = straight_through(exact, approx)
    assert torch.equal(out, exact)  # 0.3 + (1 - 0.3) rounding must not leak in
    (g,) = torch.autograd.grad(out.sum(), x)
    assert torch.equal(g, torch.full_like(x, 3.0))
    with pytest.raises(ValueError, match="shape"):
        straight_through(exact, approx[:3])


def test_bpda_with_approx_equal_to_exact_gives_the_true_gradient():
    def f(t):
        return torch.sin(3 * t) * t.square()

    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    out = bpda(f, f)(x)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_true,) = torch.autograd.grad(f(x).sum(), x)
    assert out.shape == x.shape and g.shape == x.shape
    torch.testing.assert_close(out, f(x))
    torch.testing.assert_close(g, g_true)


def test_bpda_identity_approximation_passes_the_gradient_of_the_classifier():
    clf = init_lazy(tiny_cnn(), (1, 28, 28))
    d = BitDepth(clf, bits=3)
    x = smooth_images(2).requires_grad_(True)
    (g,) = torch.autograd.grad(d.bpda()(x).sum(), x)
    z = reduce_bit_depth(x.detach()).requires_grad_(True)
    (g_at_defended,) = torch.autograd.grad(clf(z).sum(), z)
    torch.testing.assert_close(g, g_at_defended)  # identity backward: grad of f at g(x)


# ------------------------------------------------------------------ thermometer


def test_thermometer_encoding_hand_made_values():
    levels = 16
    values = torch.tensor([0.0, 0.03, 1 / 16, 0.0626, 0.5, 0.66, 1.0])
    code = thermometer_encode(values.view(1, 1, 1, -1), levels)
    assert code.shape == (1, 16, 1, 7)
    ones = code[0, :, 0].sum(0)
    # floor(0.99999 * 16 x) + 1 ones, all at the front (channel 0 is always on)
    assert ones.tolist() == [1, 1, 1, 2, 8, 11, 16]
    expected = (torch.arange(levels).view(-1, 1) < ones.view(1, -1)).float()
    assert torch.equal(code[0, :, 0], expected)
    # the lecture's 10-level example 0.66 -> 1111110000 counts from k = 1; the code has one more 1
    ten = thermometer_encode(torch.full((1, 1, 1, 1), 0.66), 10).flatten()
    assert ten.tolist() == [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]


def test_thermometer_channel_order_is_levels_within_channels():
    x = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    code = thermometer_encode(x, 4).flatten()
    assert code.tolist() == [1, 0, 0, 0, 1, 1, 1, 1]


def test_thermometer_relaxation_ramps():
    levels = 16
    k = torch.arange(levels, dtype=torch.float32)
    x = (k / levels).view(1, 1, 1, -1)  # the switch points
    centred = thermometer_relax(x, levels)[0, :, 0]  # [levels (channel), levels (point)]
    assert torch.allclose(centred.diagonal(), torch.full((levels,), 0.5))
    reference = thermometer_relax(x, levels, shift=1.0)[0, :, 0]
    assert torch.allclose(reference.diagonal(), torch.ones(levels))  # reaches 1 where the bit turns on
    # away from the ramps the relaxation equals the hard code
    mid = ((k + 0.5) / levels).view(1, 1, 1, -1)
    assert torch.equal(thermometer_relax(mid, levels, shift=0.5), thermometer_encode(mid, levels))


def test_thermometer_exact_gradient_is_zero_and_bpda_gradient_is_not():
    d = build_thermometer_model("fc", in_channels=1, image_size=8, levels=4, widths=(8,), init_seed=0).eval()
    assert d.classifier.arch_kwargs["in_channels"] == 4
    x = (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 0.9).requires_grad_(True)
    (g_exact,) = torch.autograd.grad(d(x).sum(), x)
    assert torch.equal(g_exact, torch.zeros_like(x))
    (g_bpda,) = torch.autograd.grad(d.bpda()(x).sum(), x)
    assert g_bpda.abs().sum() > 0
    with torch.no_grad():
        assert torch.equal(d(x), d.bpda()(x))


# ------------------------------------------------------------------ input transformations


def test_bit_depth_three_gives_at_most_eight_levels_as_in_the_reference():
    x = torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    x[0, 0, 0, 0], x[0, 0, 0, 1] = 0.0, 1.0
    out = reduce_bit_depth(x, 3)
    levels = out.unique()
    assert len(levels) <= 8
    allowed = torch.arange(8, dtype=torch.float32) * 32 / 255
    assert torch.isin(levels, allowed).all()
    assert out[0, 0, 0, 1] == pytest.approx(224 / 255)  # white -> 224/255 (defend_reduce)
    # numpy's (x * 255).astype(uint8) >> 5 << 5, element by element
    ref = ((x * 255).to(torch.uint8) >> 5 << 5).float() / 255
    torch.testing.assert_close(out, ref)
    assert torch.equal(reduce_bit_depth(x, 8), torch.floor(x * 255) / 255)


def test_jpeg_quality_100_is_near_identity_and_75_changes_images(small):
    x = small.x_test[:16]
    q100, q75 = jpeg_round_trip(x, 100), jpeg_round_trip(x, 75)
    assert q100.shape == x.shape and q100.dtype == x.dtype and 0 <= q75.min() and q75.max() <= 1
    err100, err75 = (q100 - x).abs().mean(), (q75 - x).abs().mean()
    assert err100 < 0.01
    assert err75 > 2 * err100
    assert ((q75 - x).abs().flatten(1).amax(1) > 0.05).all()  # every image changed
    rgb = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert jpeg_round_trip(rgb, 90).shape == rgb.shape


def test_tv_with_every_pixel_and_no_penalty_returns_the_image():
    x = smooth_images(3)
    keep_all = torch.ones(3, 1, 28, 28, dtype=torch.bool)
    torch.testing.assert_close(tv_reconstruct(x, keep_all, lambda_tv=0.0, steps=5), x, atol=1e-6, rtol=0)


def test_tv_reconstruction_from_half_the_pixels_beats_the_masked_image(small):
    x = small.x_test[:8]
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(8, 1, 28, 28, generator=g) < 0.5
    z = tv_reconstruct(x, mask, lambda_tv=0.03, steps=100)
    masked = x * mask
    err = (z - x).flatten(1).norm(dim=1)
    err_masked = (masked - x).flatten(1).norm(dim=1)
    assert (err < 0.8 * err_masked).all() and (err / err_masked).mean() < 0.65
    assert z.min() >= 0 and z.max() <= 1
    # the result depends on the kept pixels only (dropped values do not leak in)
    x2 = torch.where(mask, x, torch.rand(x.shape, generator=g))
    torch.testing.assert_close(tv_reconstruct(x2, mask, 0.03, 100), z)


def test_tv_decreases_the_objective_with_more_steps():
    x = smooth_images(2) + 0.05 * torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    x = x.clamp(0, 1)
    mask = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(2)) < 0.5

    def objective(z):
        tv = (z[..., :, 1:] - z[..., :, :-1]).abs().sum() + (z[..., 1:, :] - z[..., :-1, :]).abs().sum()
        return float((mask * (z - x)).square().sum() + 0.03 * tv)

    values = [objective(tv_reconstruct(x, mask, 0.03, s)) for s in (5, 50, 300)]
    assert values[0] > values[1] > values[2] * 0.999
    assert values[1] < 1.05 * values[2]


# ------------------------------------------------------------------ SAP


def test_sap_is_unbiased_and_keeps_with_the_reference_probability():
    g = torch.Generator().manual_seed(0)
    h = torch.rand(1, 20, generator=g) * torch.tensor([0.0, 5.0] * 10)  # some units exactly 0
    h = h + torch.rand(1, 20, generator=g) * 0.1
    draws = 40000
    u = torch.rand(draws, 20, generator=g)
    pruned = sap_prune(h.expand(draws, -1), u, ratio=2.0)
    torch.testing.assert_close(pruned.mean(0), h[0], rtol=0.05, atol=0.02)
    p = h.abs() / h.abs().sum()
    keep = 1 - torch.exp(-2.0 * 20 * p[0])
    torch.testing.assert_close((pruned != 0).float().mean(0), keep, atol=0.01, rtol=0)
    kept = pruned != 0
    torch.testing.assert_close(pruned[kept], (h.expand(draws, -1) / keep)[kept])


def test_sap_leaves_the_classifier_unchanged_and_prunes_only_during_its_forward():
    clf = init_lazy(tiny_cnn(), (1, 28, 28))
    x = smooth_images(4)
    with torch.no_grad():
        plain = clf(x)
        d = SAP(clf, seed=0)
        assert d.layers == ["1", "4"]
        noisy = d(x)
        assert not torch.equal(noisy, plain)
        assert torch.equal(clf(x), plain)
    assert all(not m._forward_hooks for m in clf.modules())


def test_sap_bpda_backward_is_the_identity_through_each_pruned_layer():
    clf = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.rand(1, 1, 2, 2, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    (g_bpda,) = torch.autograd.grad(SAP(clf).bpda()(x)[0, 0], x)
    (g_plain,) = torch.autograd.grad(clf(x)[0, 0], x)
    torch.testing.assert_close(g_bpda, g_plain)


# ------------------------------------------------------------------ random resize and pad


def test_random_resize_pad_size_and_pad_value():
    d = RandomResizePad(nn.Identity(), out_size=32, seed=0)
    x = smooth_images(64) * 0.4  # content below 0.5, so the padding is recognisable
    sizes, top, left = d.draw(x)
    assert sizes.min() >= 28 and sizes.max() <= 31 and len(sizes.unique()) > 1
    assert (top >= 0).all() and (top + sizes <= 32).all() and (left + sizes <= 32).all()
    out = random_resize_pad(x, sizes, top, left, 32)
    assert out.shape == (64, 1, 32, 32)
    for i in range(0, 64, 7):
        r, t, lft = int(sizes[i]), int(top[i]), int(left[i])
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[t : t + r, lft : lft + r] = True
        assert (out[i, 0][~inside] == 0.5).all()
        assert (out[i, 0][inside] <= 0.4 + 1e-6).all()


def test_random_resize_pad_at_the_input_size_copies_the_image():
    x = smooth_images(2)
    n = x.shape[0]
    out = random_resize_pad(x, torch.full((n,), 28), torch.tensor([0, 3]), torch.tensor([1, 0]), 31, pad_value=0.5)
    torch.testing.assert_close(out[0, :, 0:28, 1:29], x[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1, :, 3:31, 0:28], x[1], atol=1e-5, rtol=0)
    # a larger size is the corner-aligned bilinear resize (tf crop_and_resize over the whole box)
    big = random_resize_pad(x, torch.full((n,), 31), torch.zeros(n, dtype=torch.long),
                            torch.zeros(n, dtype=torch.long), 31)  # fmt: skip
    ref = nn.functional.interpolate(x, size=(31, 31), mode="bilinear", align_corners=True)
    torch.testing.assert_close(big, ref, atol=1e-5, rtol=0)


# ------------------------------------------------------------------ LID


def test_mle_lid_hand_made_value():
    ref = torch.tensor([[0.0], [1.0], [2.0], [3.0]])
    lid = mle_lid(torch.tensor([[0.0]]), ref, k=3)  # neighbours 0 (dropped), 1, 2, 3
    assert lid.item() == pytest.approx(3 / math.log(4.5), rel=1e-6)
    assert mle_lid(torch.tensor([[0.0]]), ref, k=10).item() == pytest.approx(3 / math.log(4.5), rel=1e-6)


def manifold_and_noise(n=200, dim=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, 2, generator=g)).Q  # a 2-D plane in R^20
    on_plane = torch.randn(n, 2, generator=g) @ basis.T
    noise = torch.randn(n, dim, generator=g) * on_plane.std()
    return on_plane, noise


def test_lid_is_low_on_a_low_dimensional_manifold_and_high_off_it():
    plane, noise = manifold_and_noise()
    lid_plane = mle_lid(plane, plane, k=20)
    lid_noise = mle_lid(noise, noise, k=20)
    assert 1.0 < lid_plane.median() < 3.5
    assert lid_noise.median() > 3 * lid_plane.median()


def test_lid_features_follow_the_aligned_minibatch_scheme():
    plane, noise = manifold_and_noise(n=60)
    x_clean, x_other = plane.view(60, 1, 4, 5), noise.view(60, 1, 4, 5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(20, 3))
    f_clean = lid_features(model, x_clean, x_clean, ["input", "logits"], k=5, batch_size=25)
    f_other = lid_features(model, x_other, x_clean, ["input"], k=5, batch_size=25)
    assert f_clean.shape == (60, 2) and f_other.shape == (60, 1)
    # block 2 (points 25..49) scored against clean block 2, the point itself dropped
    torch.testing.assert_close(f_clean[25:50, 0], mle_lid(plane[25:50], plane[25:50], k=5))
    torch.testing.assert_close(f_other[50:, 0], mle_lid(noise[50:], plane[50:], k=5))
    with torch.no_grad():
        logits = model(x_clean[:25])
    torch.testing.assert_close(f_clean[:25, 1], mle_lid(logits, logits, k=5))
    with pytest.raises(ValueError, match="aligned"):
        lid_features(model, x_other, x_clean[:10], ["input"], k=5)
    single = lid_features(model, x_other[:7], x_clean, ["input"], k=5, batch_size=None)
    torch.testing.assert_close(single[:, 0], mle_lid(noise[:7], plane, k=5))


def test_layer_outputs_hooks_named_layers_and_leaves_no_hook():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)).train()
    x = torch.rand(5, 1, 2, 2)
    inp, relu, logits = layer_outputs(model, x, ["input", "2", "logits"])
    assert inp.shape == (5, 4) and relu.shape == (5, 3) and logits.shape == (5, 2)
    assert (relu >= 0).all() and model.training
    assert all(not m._forward_hooks for m in model.modules())


def test_lid_detector_separates_clean_from_noisy_features():
    plane, noise = manifold_and_noise(n=300)
    model = nn.Flatten()
    x_clean, x_noisy = plane.view(300, 1, 4, 5), noise.view(300, 1, 4, 5)
    det = LIDDetector(model, ["input"], k=20, batch_size=100)
    # "adversarial" = off-manifold points here; fit on the first 200, score the last 100
    det.fit(x_clean[:200], x_noisy[:200])
    p_clean = det.predict_proba(x_clean[200:], x_clean[200:])
    p_noisy = det.predict_proba(x_noisy[200:], x_clean[200:])
    assert p_clean.shape == (100,) and ((p_clean >= 0) & (p_clean <= 1)).all()
    accuracy = ((p_clean < 0.5).float().mean() + (p_noisy > 0.5).float().mean()) / 2
    assert accuracy > 0.9
    assert det.detection_rate(x_noisy[200:], x_clean[200:]) > 0.9
    assert det.detection_rate(x_clean[200:], x_clean[200:]) < 0.1
    # refitting gives the same detector: no randomness in the fit
    again = LIDDetector(model, ["input"], k=20, batch_size=100).fit(x_clean[:200], x_noisy[:200])
    torch.testing.assert_close(again.predict_proba(x_noisy[200:], x_clean[200:]), p_noisy)


def test_lid_detector_needs_fitting_and_valid_params():
    with pytest.raises(RuntimeError, match="fit"):
        LIDDetector(nn.Flatten(), ["input"]).proba_from_features(torch.zeros(2, 1))
    with pytest.raises(ValueError, match="k"):
        LIDDetector(nn.Flatten(), ["input"], k=0)
    with pytest.raises(ValueError, match="threshold"):
        LIDDetector(nn.Flatten(), ["input"], threshold=1.0)
