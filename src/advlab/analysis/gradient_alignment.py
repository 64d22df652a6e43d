"""Loss-landscape smoothing along PGD trajectories (the "UAPs and adversarial training" study).

Run PGD on many images and keep the input gradient of the loss at every step. With g_t(x_i)
the gradient at step t for image i and ḡ_T the average gradient at the final step over the
images of i's class (the study's UAPs are class-specific; over all classes the average
cancels), the study plots cos(g_t(x_i), ḡ_T) against t: the smoother the loss landscape near
the data, the sooner and the more the gradients line up with that shared direction. The
per-image cosine to the image's own final gradient, cos(g_t(x_i), g_T(x_i)), tells how much
one trajectory turns.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["alignment", "pgd_gradients"]


def pgd_gradients(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, steps: int, step_size: float,
                  norm: str = "linf", random_start: bool = False,
                  generator: torch.Generator | None = None) -> Tensor:  # fmt: skip
    """Untargeted PGD (cross-entropy, projection onto the eps-ball and [0, 1] after each step)
    on the whole batch at once; returns the input gradients at each of the ``steps + 1``
    iterates (the start included), flattened: [steps + 1, N, D], float32 on the CPU."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm must be 'linf' or 'l2', got {norm!r}")
    if steps < 1 or eps <= 0 or step_size <= 0:
        raise ValueError(f"need steps >= 1, eps > 0 and step_size > 0; got {steps}, {eps}, {step_size}")
    x0 = x.detach()
    xa = x0.clone()
    if random_start:
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        noise = (torch.rand(x0.shape, generator=g) * 2 - 1).to(x0)
        xa = (x0 + eps * noise if norm == "linf" else x0 + eps * noise / math.sqrt(noise[0].numel())).clamp(0, 1)
    grads = []
    for t in range(steps + 1):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, xa)
        grads.append(grad.detach().flatten(1).float().cpu())
        if t == steps:
            break
        with torch.no_grad():
            if norm == "linf":
                xa = xa + step_size * grad.sign()
                xa = torch.min(torch.max(xa, x0 - eps), x0 + eps)
            else:
                unit = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (grad.dim() - 1))
                delta = xa + step_size * unit - x0
                dn = delta.flatten(1).norm(dim=1).view(-1, *[1] * (grad.dim() - 1))
                xa = x0 + delta * torch.clamp(eps / dn.clamp_min(1e-12), max=1.0)
            xa = xa.clamp(0, 1).detach()
    return torch.stack(grads)


def alignment(grads: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
    """From ``pgd_gradients``' [T + 1, N, D]: "to_mean_final" [T + 1, N] = cos(g_t(x_i), ḡ_T)
    with ḡ_T the mean of the final gradients over the images of i's label (``labels`` [N]),
    or over all images without labels; "to_own_final" [T + 1, N] = cos(g_t(x_i), g_T(x_i)).
    Images whose gradient vanishes get cosine 0."""
    if grads.dim() != 3 or grads.shape[1] == 0:
        raise ValueError(f"grads must be [steps + 1, N, D] with N > 0, got {tuple(grads.shape)}")
    g = grads.double()
    if labels is None:
        mean_final = g[-1].mean(0).expand_as(g)
    else:
        labels = labels.cpu().long()
        if labels.shape != (g.shape[1],):
            raise ValueError(f"labels must be [N] = [{g.shape[1]}], got {tuple(labels.shape)}")
        k = int(labels.max()) + 1
        sums = torch.zeros(k, g.shape[2], dtype=g.dtype).index_add_(0, labels, g[-1])
        counts = torch.bincount(labels, minlength=k).clamp_min(1).to(g.dtype)
        mean_final = (sums / counts[:, None])[labels].expand_as(g)
    to_mean = F.cosine_similarity(g, mean_final, dim=-1, eps=1e-30)
    to_own = F.cosine_similarity(g, g[-1].unsqueeze(0).expand_as(g), dim=-1, eps=1e-30)
    return {"to_mean_final": to_mean.float(), "to_own_final": to_own.float()}
