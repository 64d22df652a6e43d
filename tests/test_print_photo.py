"""The print-and-photo simulator: every step keeps shape, range and dtype, is seeded, and
does what it says; the chain composes, builds from params with clear errors, and lets
gradients through when asked."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as Fn

from advlab.transforms import (
    STEPS,
    Defocus,
    GaussianBlur,
    Jpeg,
    Motion,
    Noise,
    Perspective,
    Photometric,
    PrintPhoto,
    Quantize,
    Resample,
    single_transform,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def smooth_colour(n: int = 6, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Smooth RGB images (bilinear upsampling of 4x4 noise): JPEG-friendly content."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g)
    return Fn.interpolate(low, size=(size, size), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def digits(small):
    return small.x_test[:64]


def high_frequency_energy(x: torch.Tensor) -> torch.Tensor:
    """Per image: spectral energy above half the Nyquist frequency (mean removed)."""
    f = torch.fft.fft2(x - x.mean((2, 3), keepdim=True))
    h, w = x.shape[2:]
    fy = torch.fft.fftfreq(h).abs()[:, None]
    fx = torch.fft.fftfreq(w).abs()[None, :]
    high = (fy > 0.25) | (fx > 0.25)
    return (f.abs() ** 2 * high).sum((1, 2, 3))


ALL_STEPS = [
    Quantize(), Perspective(), Perspective(shift=0.1, rotate=10, crop=0.2), Resample(), Resample(0.4), Defocus(),
    Defocus(2.0), Motion(), Motion(4.0), Photometric(), Photometric(brightness=0.2, contrast=0.7, gamma=1.5, jitter=0.2),
    Noise(), Noise(std=0.2, shot=0.1), Jpeg(), Jpeg(10), Photometric(brightness=0.3, jitter=0.0),
    Photometric(brightness=-0.3, jitter=0.0), Photometric(contrast=1.5, jitter=0.0), GaussianBlur(1.0), Noise(0.1, shot=0.0),
]  # fmt: skip


@pytest.mark.parametrize("step", ALL_STEPS, ids=lambda s: f"{s.name}({s.extra_repr()})")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_every_step_keeps_shape_range_and_dtype(step, dtype, digits):
    for x in (digits.to(dtype), smooth_colour().to(dtype)):
        out = step(x, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and out.dtype == dtype
        assert bool(torch.isfinite(out).all()) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
        assert x.min() >= 0  # input untouched (not in place)


@pytest.mark.parametrize("step", [s for s in ALL_STEPS if s.random], ids=lambda s: s.name)
def test_random_steps_are_deterministic_under_a_seed(step, digits):
    a = step(digits, torch.Generator().manual_seed(5))
    b = step(digits, torch.Generator().manual_seed(5))
    c = step(digits, torch.Generator().manual_seed(6))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_chain_is_deterministic_under_a_seed_and_fresh_per_call_as_a_module(digits):
    chain = PrintPhoto(seed=3)
    assert torch.equal(chain.apply(digits, torch.Generator().manual_seed(1)),
                       chain.apply(digits, torch.Generator().manual_seed(1)))  # fmt: skip
    first, second = chain(digits), chain(digits)
    assert not torch.equal(first, second)  # the module draws fresh parameters per call
    chain.reseed(3)
    assert torch.equal(chain(digits), first)


@pytest.mark.parametrize("step", [Defocus(1.0), Motion(3.0), GaussianBlur(1.0), Resample(0.5)], ids=lambda s: s.name)
def test_blurs_lower_high_frequency_energy(step, digits):
    before = high_frequency_energy(digits)
    after = high_frequency_energy(step(digits, torch.Generator().manual_seed(0)))
    assert bool((after < 0.6 * before).all())


def test_stronger_blur_removes_more(digits):
    energies = [float(high_frequency_energy(Defocus(r)(digits)).sum()) for r in (0.5, 1.0, 2.0)]
    assert energies[0] > energies[1] > energies[2]


def test_jpeg_at_quality_100_is_near_identity_and_low_quality_is_not(digits):
    x = Quantize()(smooth_colour())
    # colour: the YCbCr round trip and 4:2:0 chroma subsampling cost about a level on average
    # (more at sharp colour changes); grey levels have neither
    assert float((Jpeg(100)(x) - x).abs().mean()) < 2.5 / 255
    gray = Jpeg(100)(digits)
    assert float((gray - digits).abs().mean()) < 1.0 / 255
    assert float((gray - digits).abs().max()) < 8 / 255
    assert float((Jpeg(5)(x) - x).abs().mean()) > float((Jpeg(100)(x) - x).abs().mean()) * 3


def test_brightness_shifts_the_mean_and_contrast_scales_it():
    x = torch.full((4, 1, 8, 8), 0.4)
    g = torch.Generator().manual_seed(0)
    # the paper's single transformations: X + delta and X * mu
    torch.testing.assert_close(single_transform("brightness", 0.1).steps[0](x, g).mean(), torch.tensor(0.5))
    torch.testing.assert_close(single_transform("brightness", -0.2).steps[0](x, g).mean(), torch.tensor(0.2))
    torch.testing.assert_close(single_transform("contrast", 1.5).steps[0](x, g).mean(), torch.tensor(0.6))
    out = Photometric(brightness=0.1, jitter=0.0)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.mean(), torch.tensor(0.5))
    dark = Photometric(gamma=2.0, jitter=0.0)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(dark.mean(), torch.tensor(0.16))


def test_noise_has_the_stated_spread():
    x = torch.full((16, 1, 32, 32), 0.5)
    out = Noise(std=0.05, shot=0.0)(x, torch.Generator().manual_seed(0))
    assert abs(float(out.std()) - 0.05) < 0.003 and abs(float(out.mean()) - 0.5) < 0.003
    out = single_transform("noise", 0.1).steps[0](x, torch.Generator().manual_seed(0))
    assert abs(float(out.std()) - 0.1) < 0.005


def test_perspective_without_distortion_is_the_identity_and_corners_land_where_drawn(digits):
    torch.testing.assert_close(Perspective(0.0, 0.0, 0.0)(digits, torch.Generator()), digits, atol=1e-5, rtol=0)
    p = Perspective(shift=0.05, rotate=5.0, crop=0.1)
    hom = p.homographies(3, torch.Generator().manual_seed(0))
    corners = torch.tensor([[-1.0, -1.0, 1.0], [1.0, -1.0, 1.0], [1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]], dtype=torch.float64)
    src = corners @ hom.transpose(1, 2)
    src = src[..., :2] / src[..., 2:]
    # every corner reads from within the zoom / rotation / shift budget
    assert float((src.abs() - 1).abs().max()) < 0.1 + 2 * 0.05 + math.sin(math.radians(5.0)) * 1.5


def test_default_chain_on_digits_and_colour_and_its_trace(digits):
    chain = PrintPhoto()
    for x in (digits, smooth_colour()):
        out = chain.apply(x, torch.Generator().manual_seed(0))
        assert out.shape == x.shape and float(out.min()) >= 0 and float(out.max()) <= 1
        # a photo of a print is close to, not equal to, the image
        assert 0 < float((out - x).abs().mean()) < 0.15
        # 8-bit at the end
        torch.testing.assert_close(out * 255, (out * 255).round(), atol=1e-4, rtol=0)
    names = [name for name, _ in chain.trace(digits, torch.Generator().manual_seed(0))]
    assert names == ["input", *STEPS]
    last = chain.trace(digits, torch.Generator().manual_seed(0))[-1][1]
    assert torch.equal(last, chain.apply(digits, torch.Generator().manual_seed(0)))


def test_gradients_pass_through_the_whole_chain_only_when_differentiable(digits):
    x = digits[:4].clone().requires_grad_(True)
    PrintPhoto(differentiable=True)(x).sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0
    x.grad = None
    PrintPhoto()(x).sum().backward()  # JPEG and 8-bit rounding: gradient zero, as they are
    assert float(x.grad.abs().sum()) == 0.0
    y = digits[:4].clone().requires_grad_(True)
    PrintPhoto.from_params({"quantize": False, "jpeg": False})(y).sum().backward()
    assert float(y.grad.abs().sum()) > 0


def test_from_params_builds_orders_drops_and_names_bad_keys():
    chain = PrintPhoto.from_params({"defocus": {"radius": 1.2}, "jpeg": {"quality": 60}, "motion": False})
    assert [s.name for s in chain.steps] == [n for n in STEPS if n != "motion"]
    assert chain.steps[3].radius == 1.2 and chain.steps[-1].quality == 60
    assert [s.name for s in PrintPhoto.from_params({"order": ["jpeg", "quantize"]}).steps] == ["jpeg", "quantize"]
    with pytest.raises(ValueError, match=r"unknown print_photo step\(s\) \['blurr'\]"):
        PrintPhoto.from_params({"blurr": {}})
    with pytest.raises(ValueError, match=r"defocus.radius must be a number >= 0.0"):
        PrintPhoto.from_params({"defocus": {"radius": -1}})
    with pytest.raises(ValueError, match=r"jpeg.quality must be an integer"):
        PrintPhoto.from_params({"jpeg": {"quality": 0}})
    with pytest.raises(ValueError, match=r"print_photo.noise: .*unexpected keyword argument 'sigma'"):
        PrintPhoto.from_params({"noise": {"sigma": 0.1}})
    with pytest.raises(ValueError, match="print_photo.order"):
        PrintPhoto.from_params({"order": ["jpeg", "jpeg"]})
    with pytest.raises(ValueError, match="NCHW"):
        PrintPhoto().apply(torch.rand(3, 8, 8))


def test_single_transforms_of_the_ablation():
    x = torch.full((2, 1, 8, 8), 0.4)
    torch.testing.assert_close(single_transform("brightness", 0.2).apply(x), torch.full_like(x, 0.6), atol=1 / 255, rtol=0)
    assert single_transform("jpeg", 80).steps[0].quality == 80
    assert [s.name for s in single_transform("blur", 1.0).steps] == ["blur", "quantize"]
    with pytest.raises(ValueError, match="unknown single transform 'warp'"):
        single_transform("warp", 1.0)
