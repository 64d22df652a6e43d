"""Natural-basis units vs random directions of a hidden layer (Szegedy et al. 2014, §3).

For a layer phi and held-out images x, the paper compares the images that maximise
``<phi(x), e_i>`` (a unit) with those that maximise ``<phi(x), v>`` (a random
direction v) and finds them equally semantically coherent, so the units themselves
are not special. Units are just the directions ``e_i``::

    acts = layer_activations(model, x_test, "relu1")
    units = torch.eye(acts.shape[1])[:8]
    random = random_directions(acts.shape[1], 8, generator=torch.Generator().manual_seed(0))
    label_purity(y_test, top_activating(acts, units, 8))   # vs. the same for `random`

The figures (image grids) are drawn by the pipeline; this module stays numeric.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["label_purity", "layer_activations", "layer_names", "random_directions", "top_activating"]


def _body(model: nn.Module) -> nn.Module:
    # An advlab ImageClassifier is normalize + net; layer names are those of net.
    return getattr(model, "net", model)


def layer_names(model: nn.Module) -> list[str]:
    """Names accepted by :func:`layer_activations`: the submodules of ``model.net``."""
    return [name for name, _ in _body(model).named_modules() if name]


def layer_activations(model: nn.Module, x: Tensor, layer: str, *, batch_size: int = 1000) -> Tensor:
    """Output of submodule ``layer`` of ``model.net`` for images ``x``, flattened to ``[N, D]``.

    The whole model runs (normalisation included) in eval mode without gradients; a
    forward hook records the layer's output. Float32, on the CPU; the model's
    train/eval mode is restored.
    """
    modules = dict(_body(model).named_modules())
    modules.pop("", None)
    if layer not in modules:
        raise ValueError(f"model has no layer {layer!r}; available layers: {', '.join(modules) or 'none'}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next((t.device for t in (*model.parameters(), *model.buffers())), torch.device("cpu"))
    captured: list[Tensor] = []

    def hook(module: nn.Module, inputs, output) -> None:
        # Copied at once: a later in-place op (e.g. ReLU(inplace=True)) must not change it.
        captured.append(output.detach().flatten(1).to("cpu", torch.float32, copy=True))

    handle = modules[layer].register_forward_hook(hook)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for i in range(0, len(x), batch_size):
                model(x[i : i + batch_size].to(device))
    finally:
        handle.remove()
        model.train(was_training)
    if not captured:
        raise ValueError("x is empty: no activations to return")
    return torch.cat(captured)


def random_directions(dim: int, n: int, *, generator: torch.Generator) -> Tensor:
    """``n`` directions drawn uniformly on the unit sphere of R^dim (normalised Gaussians), ``[n, dim]``."""
    if dim < 1 or n < 0:
        raise ValueError(f"need dim >= 1 and n >= 0, got dim={dim}, n={n}")
    v = torch.randn(n, dim, generator=generator, device=generator.device)
    return F.normalize(v, dim=1)


def top_activating(acts: Tensor, directions: Tensor, k: int) -> Tensor:
    """Indices ``[n_dirs, k]`` of the ``k`` rows of ``acts`` with the largest ``<acts, v>``
    for each direction ``v`` (row of ``directions``), largest first.

    Ties are broken by the lower index (a stable sort), so dead ReLU units give a
    reproducible answer. A unit i is the direction ``e_i`` (``torch.eye(D)[i]``).
    """
    if acts.ndim != 2 or directions.ndim != 2 or acts.shape[1] != directions.shape[1]:
        raise ValueError(
            f"acts [N, D] and directions [n_dirs, D] must agree in D, got {tuple(acts.shape)} and "
            f"{tuple(directions.shape)}"
        )
    if not 1 <= k <= len(acts):
        raise ValueError(f"k must be in [1, {len(acts)}] (the number of images), got {k}")
    proj = acts.float() @ directions.to(acts.device, torch.float32).T  # [N, n_dirs]
    order = torch.sort(proj, dim=0, descending=True, stable=True).indices
    return order[:k].T.contiguous()


def label_purity(labels: Tensor, top_idx: Tensor) -> Tensor:
    """Per direction, the fraction of its ``k`` top images that share the most common label.

    A number to put beside the image grids: 1 means all ``k`` images are one digit;
    for images drawn at random it is near the largest class frequency.
    """
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.dtype.is_floating_point:
        raise ValueError("labels must be a 1-D tensor of class indices")
    if top_idx.ndim != 2 or top_idx.shape[1] == 0:
        raise ValueError(f"top_idx must be [n_dirs, k] with k >= 1, got {tuple(top_idx.shape)}")
    chosen = labels.to(top_idx.device)[top_idx].long()  # [n_dirs, k]
    counts = F.one_hot(chosen, int(labels.max()) + 1).sum(dim=1)  # [n_dirs, classes]
    return counts.max(dim=1).values.float() / top_idx.shape[1]
