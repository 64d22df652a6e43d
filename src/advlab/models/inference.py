"""Batched prediction without gradients."""

from __future__ import annotations

import torch
from torch import nn


def _device(model: nn.Module) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def predict_logits(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Logits for ``x`` in eval mode, on the CPU; the model's train/eval mode is restored."""
    device = _device(model)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            # max(.., 1): an empty x still runs once, giving logits of shape [0, classes].
            out = [
                model(x[i : i + batch_size].to(device)).float().cpu()
                for i in range(0, max(len(x), 1), batch_size)
            ]
    finally:
        model.train(was_training)
    return torch.cat(out)


def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels (int64, CPU)."""
    return predict_logits(model, x, batch_size=batch_size).argmax(dim=1)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Fraction of ``x`` whose predicted label equals ``y``."""
    if len(x) == 0:
        raise ValueError("accuracy of an empty set is undefined")
    return float((predict(model, x, batch_size=batch_size) == y.cpu()).float().mean())


evaluate_accuracy = accuracy
