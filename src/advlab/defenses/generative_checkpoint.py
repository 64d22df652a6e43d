"""Checkpoints of the generative defences' networks (PixelCNN, DCGAN), loadable without pickles.

The payload holds plain tensors and containers only: the kind, the constructor arguments, one
state dict per network and a free-form ``meta``; :func:`load_generative` rebuilds the networks in
eval mode and reads with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .defensegan import DCGANDiscriminator, DCGANGenerator
from .pixeldefend import GatedPixelCNN

FORMAT = "advlab-generative-1"
KINDS = {"pixelcnn": {"pixelcnn": GatedPixelCNN}, "dcgan": {"generator": DCGANGenerator,
                                                            "discriminator": DCGANDiscriminator}}


def generative_payload(kind: str, kwargs: dict[str, dict], networks: dict[str, nn.Module], meta: dict) -> dict:
    """What to ``torch.save``: ``kwargs[name]`` rebuilds ``networks[name]`` (its class is fixed by ``kind``)."""
    if kind not in KINDS or set(networks) != set(KINDS[kind]) or set(kwargs) != set(KINDS[kind]):
        raise ValueError(f"a {kind!r} checkpoint holds exactly {sorted(KINDS.get(kind, {}))}, got {sorted(networks)}")
    return {"format": FORMAT, "kind": kind, "kwargs": kwargs, "meta": meta,
            "state_dicts": {name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
                            for name, net in networks.items()}}


def load_generative(path: str | Path, kind: str) -> tuple[dict[str, nn.Module], dict]:
    """``({name: network in eval mode}, meta)`` from a checkpoint of ``kind``; a clear error otherwise."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; run the stage that trains the {kind} first")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, altered or pickle-bearing: refuse, never execute
        raise ValueError(f"{path}: not a readable {kind} checkpoint ({type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("kind") != kind:
        found = (payload.get("format"), payload.get("kind")) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path}: not an advlab {kind} checkpoint (expected {(FORMAT, kind)}, found {found})")
    nets = {}
    for name, cls in KINDS[kind].items():
        net = cls(**payload["kwargs"][name])
        net.load_state_dict(payload["state_dicts"][name])
        nets[name] = net.eval()
    return nets, payload["meta"]
