"""Checkpoints of the generative defenses' networks: round trip, and refusals that name the problem."""
from __future__ import annotations

import pytest
import torch

from advlab.defenses.defensegan import DCGANDiscriminator, DCGANGenerator
from advlab.defenses.generative_checkpoint import generative_payload, load_generative
from advlab.defenses.pixeldefend import GatedPixelCNN


def test_round_trip_rebuilds_the_same_networks(tmp_path):
    torch.manual_seed(0)
    net = GatedPixelCNN(channels=4, layers=2, kernel=3)
    path = tmp_path / "pixelcnn.pt"
    torch.save(generative_payload("pixelcnn", {"pixelcnn": {"channels": 4, "layers": 2, "kernel": 3}},
                                  {"pixelcnn": net}, {"bpd": 1.5}), path)
    nets, meta = load_generative(path, "pixelcnn")
    x = torch.rand(2, 1, 6, 6)
    assert meta == {"bpd": 1.5} and not nets["pixelcnn"].training
    assert torch.equal(nets["pixelcnn"](x), net.eval()(x))
    g, d = DCGANGenerator(z_dim=4, width=4), DCGANDiscriminator(width=4)
    torch.save(generative_payload("dcgan", {"generator": {"z_dim": 4, "width": 4}, "discriminator": {"width": 4}},
                                  {"generator": g, "discriminator": d}, {}), tmp_path / "gan.pt")
    nets, _ = load_generative(tmp_path / "gan.pt", "dcgan")
    z = torch.randn(3, 4)
    assert torch.equal(nets["generator"](z), g.eval()(z))


@pytest.mark.faults_bad_input
def test_wrong_kind_missing_file_and_pickles_are_refused(tmp_path):
    net = GatedPixelCNN(channels=4, layers=1, kernel=3)
    path = tmp_path / "pixelcnn.pt"
    torch.save(generative_payload("pixelcnn", {"pixelcnn": {"channels": 4, "layers": 1, "kernel": 3}},
                                  {"pixelcnn": net}, {}), path)
    with pytest.raises(ValueError, match="not an advlab dcgan checkpoint"):
        load_generative(path, "dcgan")
    with pytest.raises(FileNotFoundError, match="run the stage that trains the dcgan first"):
        load_generative(tmp_path / "gan.pt", "dcgan")
    evil = tmp_path / "evil.pt"
    torch.save({"format": "advlab-generative-1", "kind": "pixelcnn", "obj": _Unpicklable()}, evil)
    with pytest.raises(ValueError, match="not a readable pixelcnn checkpoint"):
        load_generative(evil, "pixelcnn")
    with pytest.raises(ValueError, match="holds exactly"):
        generative_payload("dcgan", {}, {"generator": DCGANGenerator()}, {})


class _Unpicklable:
    """An arbitrary class: weights_only loading must refuse to rebuild it."""


def test_colour_networks_round_trip(tmp_path):
    """The constructor arguments in the payload rebuild the RGB PixelCNN (its masks included: they are
    not in the state dict) and the 32 x 32 DCGAN."""
    torch.manual_seed(0)
    arch = {"channels": 6, "layers": 2, "kernel": 3, "colours": 3}
    net = GatedPixelCNN(**arch)
    torch.save(generative_payload("pixelcnn", {"pixelcnn": arch}, {"pixelcnn": net}, {}), tmp_path / "p.pt")
    loaded = load_generative(tmp_path / "p.pt", "pixelcnn")[0]["pixelcnn"]
    x = torch.rand(2, 3, 5, 5)
    assert torch.equal(loaded(x), net.eval()(x)) and loaded.colours == 3
    shape = {"channels": 3, "size": 32}
    g, d = DCGANGenerator(z_dim=4, width=4, **shape), DCGANDiscriminator(width=4, **shape)
    torch.save(generative_payload("dcgan", {"generator": {"z_dim": 4, "width": 4, **shape},
                                            "discriminator": {"width": 4, **shape}},
                                  {"generator": g, "discriminator": d}, {}), tmp_path / "g.pt")
    nets = load_generative(tmp_path / "g.pt", "dcgan")[0]
    z = torch.randn(3, 4)
    assert torch.equal(nets["generator"](z), g.eval()(z)) and nets["generator"](z).shape == (3, 3, 32, 32)
