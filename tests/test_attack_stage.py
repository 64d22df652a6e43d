"""The attack stage's glue: keyword arguments from params and seeded random targets."""
import torch

from advlab.attacks import ATTACKS
from pipeline.attack import attack_kwargs, random_targets


def test_stage_keys_are_not_passed_to_the_attack():
    cfg = {"type": "jsma", "theta": 1.0, "gamma": 0.1, "n_points": 50, "targets": "random"}
    assert attack_kwargs(cfg, seed=0) == {"theta": 1.0, "gamma": 0.1}


def test_random_attacks_get_a_seeded_generator():
    a = attack_kwargs({"type": "one_pixel", "pixels": 1}, seed=3)["generator"]
    b = attack_kwargs({"type": "one_pixel", "pixels": 1}, seed=3)["generator"]
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert "generator" not in attack_kwargs({"type": "fgsm", "eps": 0.1}, seed=3)
    # every attack that draws random numbers takes one
    assert "generator" in attack_kwargs({"type": "pgd"}, seed=0)


def test_random_targets_are_wrong_classes_and_reproducible():
    y = torch.arange(10).repeat(20)
    t = random_targets(y, 10, seed=0)
    assert (t != y).all() and t.min() >= 0 and t.max() <= 9
    assert torch.equal(t, random_targets(y, 10, seed=0))
    assert not torch.equal(t, random_targets(y, 10, seed=1))
    assert len(set(t[y == 0].tolist())) > 3  # drawn, not a fixed shift


def test_every_registered_attack_takes_model_x_y():
    import inspect

    for name, fn in ATTACKS.items():
        params = list(inspect.signature(fn).parameters)
        assert params[:3] == ["model", "x", "y"], name
