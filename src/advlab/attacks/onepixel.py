"""One-pixel attack (Su, Vargas, Sakurai 2019, "One pixel attack for fooling deep neural
networks") by differential evolution, batched over images and candidates.

A candidate perturbs ``pixels`` pixels; each perturbed pixel is ``(row, col, v_1 .. v_C)``
with the position in ``[0, H) x [0, W)`` and the colour in 0-255 units, all continuous
for the evolution and floored to integers when applied: the pixel at ``(row, col)`` is
*set* to ``v_c / 255`` in channel ``c`` (the paper attacks the uint8 image; Hyperparticle's
``perturb_image`` floors every value and writes ``img[row, col] = rgb``). Perturbed pixels
are written in order, so a later one wins where two share a position.

Fitness is the softmax probability of the true class (untargeted, minimised) or of the
target class (targeted, maximised). Per image, a population of ``popsize`` candidates is
initialised with positions uniform over the image and colours ~ N(128, 127) clipped to
0-255 (paper), then evolved for up to ``max_iter`` generations. Each generation builds
one child per member from the population of the previous generation (synchronous, as in
scipy's vectorised solver that torchattacks ships) and the child replaces its parent only
if strictly fitter. Two strategies:

* ``"rand1"`` (paper, default): ``child = x_r1 + F (x_r2 - x_r3)``, ``F = 0.5``, with r1, r2,
  r3 distinct and different from the parent's index, and no crossover.
* ``"best1bin"`` (Hyperparticle/one-pixel-attack-keras, scipy's default):
  ``mutant = x_best + F (x_r1 - x_r2)`` with ``F`` dithered uniformly in [0.5, 1) once per
  generation (per image) and recombination 1, i.e. again the child is the mutant.
  Hyperparticle initialises by Latin hypercube over the bounds and runs 75 generations;
  both strategies here use the paper's initialisation, and ``max_iter`` is the caller's.

``crossover=CR`` adds scipy's binomial crossover (each coordinate from the mutant with
probability CR, one random coordinate always). A child coordinate outside its range is
resampled uniformly in the range, as scipy's ``_ensure_constraint`` does.

Deviations from the reference code, each for a stated reason:

* Stop test. Hyperparticle and torchattacks stop when the *fittest* member succeeds. Here an
  image stops at the first generation in which *any* evaluated candidate reaches the goal
  (the fittest such candidate is returned): a candidate can be adversarial without having
  the lowest true-class probability, and the references would throw it away.
* A child whose floored values equal its parent's is the same image: it cannot be strictly
  fitter, so it is not evaluated (no forward pass, not counted). A candidate whose floored
  values were evaluated before for the same image is looked up, not evaluated again
  (late in a run most children repeat one; exact, so results are unchanged, see _Memo).
* Randomness is counter based: every random number is a hash of a per-point key and its
  position in the run (generation, candidate, coordinate). The key mixes one draw from
  ``generator`` with a hash of the point's own bytes, label and target, so a point's result
  does not depend on the batch it is run in, nor on its position there.

Contract for batch == one by one: same result whenever the model's output for an image
does not depend on the other images in its forward batch (true in exact arithmetic; in
float32 on a CPU, blocking can change the last bit, and a tie between two different
images can then be broken the other way).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..models.local_forward import LocalForward
from ..models.local_forward import supports as supports_local
from .result import AttackResult, check_inputs, make_result

__all__ = ["one_pixel", "STRATEGIES"]

STRATEGIES = ("rand1", "best1bin")
_DEFAULT_F = {"rand1": 0.5, "best1bin": (0.5, 1.0)}
_COLOUR_RANGE = 256.0  # colour coordinates live in [0, 256) and floor to 0..255
_INIT_MEAN, _INIT_STD = 128.0, 127.0  # paper: colours ~ N(128, 127)
# forward chunk: on a CPU small chunks stay in cache (a 32x32 AllConv runs ~3x faster per
# image at 128 than at 1024); an accelerator wants large ones
_DEFAULT_BATCH_CPU, _DEFAULT_BATCH_ACCEL = 128, 4096
_DEFAULT_BATCH_CPU_LOCAL = 256  # patch forwards are ~8x lighter: larger chunks pay
_LOCAL_CACHE_BYTES = 2 * 2**30  # auto mode: cache at most this much clean activation

# ---------------------------------------------------------------- counter-based RNG

_M32 = 0xFFFFFFFF
# stream tags (one stream per tag and generation)
_INIT, _PICK, _CROSS, _FORCE, _RESAMPLE, _DITHER = range(6)
_N_TAGS = 8


def _mul32(x: Tensor, c: int) -> Tensor:
    """``(x * c) mod 2**32`` for int64 ``x`` in [0, 2**32), split in 16-bit limbs so that
    no intermediate exceeds 2**49 (signed int64 overflow is not defined behaviour)."""
    lo, hi = x & 0xFFFF, x >> 16
    return (lo * c + (((hi * c) & 0xFFFF) << 16)) & _M32


def _hash32(x: Tensor) -> Tensor:
    """Wellons' ``lowbias32`` integer hash on int64 tensors holding 32-bit values."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _hash32_int(v: int) -> int:
    return int(_hash32(torch.tensor([v & _M32], dtype=torch.int64)).item())


def _uniform(keys: Tensor, tag: int, gen: int, shape: Sequence[int]) -> Tensor:
    """float64 uniforms in [0, 1) (24 bits), ``[len(keys), *shape]``: a pure function of
    each row's key, the tag, the generation and the position inside ``shape``."""
    n = math.prod(shape)
    s = _hash32(keys ^ _hash32_int(gen * _N_TAGS + tag))[:, None]
    c = torch.arange(n, device=keys.device, dtype=torch.int64)
    h = _hash32((_hash32(s ^ c) + s) & _M32)
    return ((h >> 8).to(torch.float64) * 2.0**-24).view(len(keys), *shape)


def _point_keys(x: Tensor, y: Tensor, target: Tensor | None, generator: torch.Generator) -> Tensor:
    """One 32-bit key per point from one generator draw, the point's bytes, label and target."""
    base = int(torch.randint(0, 2**32, (1,), generator=generator, device=generator.device, dtype=torch.int64))
    n = x.shape[0]
    flat = x.detach().contiguous().view(n, -1)
    words = flat.view(torch.int32) if flat.element_size() >= 4 else flat.view(torch.int16)
    content = torch.empty(n, dtype=torch.int64, device=x.device)
    pos = _hash32(torch.arange(words.shape[1], device=x.device, dtype=torch.int64))
    step = max(1, (1 << 22) // words.shape[1])  # bounded int64 scratch memory
    for s in range(0, n, step):  # chunks of points, not a loop over points
        w = words[s : s + step].to(torch.int64) & _M32
        content[s : s + step] = _hash32(pos ^ w).sum(1) & _M32
    k = _hash32(content ^ base)
    k = _hash32(k ^ y.to(torch.int64))
    aim = torch.zeros_like(y, dtype=torch.int64) if target is None else target.to(torch.int64) + 1
    return _hash32(k ^ aim)


# ---------------------------------------------------------------- candidates -> images


def _floored(params: Tensor, upper: Tensor) -> Tensor:
    """Integer values of candidates ``[..., D]``: floor, clamped to [0, upper - 1]."""
    return torch.minimum(params.floor().clamp_min(0.0), upper - 1.0)


def _apply(x: Tensor, params: Tensor, pixels: int) -> Tensor:
    """Images ``x`` [B, C, H, W] with candidates ``params`` [B, D] applied (new tensor)."""
    b, c, h, w = x.shape
    q = params.view(b, pixels, 2 + c)
    out = x.reshape(b, c * h * w).clone()
    chan = torch.arange(c, device=x.device, dtype=torch.int64) * (h * w)
    for k in range(pixels):  # later pixels overwrite earlier ones at the same position
        where = (q[:, k, 0].long() * w + q[:, k, 1].long())[:, None] + chan
        out.scatter_(1, where, (q[:, k, 2:] / 255.0).to(x.dtype))
    return out.view(b, c, h, w)


def _logits(model: nn.Module, x: Tensor, batch_size: int) -> Tensor:
    with torch.no_grad():
        return torch.cat([model(x[s : s + batch_size]) for s in range(0, x.shape[0], batch_size)])


# ---------------------------------------------------------------- differential evolution


def _distinct(u: Tensor, parent: Tensor, size: int) -> Tensor:
    """Indices ``[A, P, m]`` distinct from each other and from ``parent`` ([P]), uniform,
    from uniforms ``u`` [A, P, m]: the j-th draw picks among the ``size - 1 - j``
    indices left, and is mapped past the excluded ones in ascending order."""
    a, p, m = u.shape
    excluded = parent.view(1, p, 1).expand(a, p, 1)
    picks = []
    for j in range(m):
        r = (u[..., j] * (size - 1 - j)).long()
        for e in excluded.sort(dim=-1).values.unbind(-1):
            r = r + (r >= e).long()
        picks.append(r)
        excluded = torch.cat([excluded, r[..., None]], dim=-1)
    return torch.stack(picks, dim=-1)


def _children(
    pop: Tensor,
    energy: Tensor,
    keys: Tensor,
    gen: int,
    *,
    strategy: str,
    F: float | tuple[float, float],
    crossover: float | None,
    upper: Tensor,
) -> Tensor:
    """One child per member, ``[A, P, D]``, from the current population ``pop``."""
    a, p, d = pop.shape
    if isinstance(F, tuple):  # dither: one F per image and generation (scipy)
        f = F[0] + (F[1] - F[0]) * _uniform(keys, _DITHER, gen, (1,))
        f = f.to(pop.dtype).view(a, 1, 1)
    else:
        f = F
    n_pick = 3 if strategy == "rand1" else 2
    r = _distinct(_uniform(keys, _PICK, gen, (p, n_pick)), torch.arange(p, device=pop.device), p)

    def member(i: int) -> Tensor:
        return pop.gather(1, r[..., i, None].expand(a, p, d))

    if strategy == "rand1":
        mutant = member(0) + f * (member(1) - member(2))
    else:
        best = pop.gather(1, energy.argmin(1).view(a, 1, 1).expand(a, 1, d))
        mutant = best + f * (member(0) - member(1))
    if crossover is None:
        child = mutant
    else:
        take = _uniform(keys, _CROSS, gen, (p, d)) < crossover
        forced = (_uniform(keys, _FORCE, gen, (p, 1)) * d).long()
        take |= torch.arange(d, device=pop.device) == forced
        child = torch.where(take, mutant, pop)
    out = (child < 0) | (child >= upper)
    fresh = _uniform(keys, _RESAMPLE, gen, (p, d)).to(pop.dtype) * upper
    return torch.where(out, fresh, child)


def _initial(keys: Tensor, p: int, pixels: int, c: int, h: int, w: int) -> Tensor:
    """Paper's initial population ``[A, P, D]``: positions uniform over the image,
    colours N(128, 127) clipped to [0, 255] (Box-Muller on two uniforms)."""
    u = _uniform(keys, _INIT, 0, (p, pixels, 2 + 2 * c))
    rows, cols = u[..., 0] * h, u[..., 1] * w
    u1, u2 = 1.0 - u[..., 2 : 2 + c], u[..., 2 + c :]  # u1 in (0, 1]
    z = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    colours = (_INIT_MEAN + _INIT_STD * z).clamp(0.0, 255.0)
    return torch.cat([rows[..., None], cols[..., None], colours], dim=-1).view(len(keys), p, pixels * (2 + c))


# ---------------------------------------------------------------- parameters


def _as_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _check_f(F, strategy: str) -> float | tuple[float, float]:
    if F is None:
        return _DEFAULT_F[strategy]
    if isinstance(F, (tuple, list)):
        if len(F) != 2:
            raise ValueError(f"F must be a number in (0, 2] or a (low, high) dither range, got {F!r}")
        lo, hi = float(F[0]), float(F[1])
        if not (0 < lo < hi <= 2):
            raise ValueError(f"F as a dither range needs 0 < low < high <= 2, got {F!r}")
        return (lo, hi)
    F = float(F)
    if not (math.isfinite(F) and 0 < F <= 2):
        raise ValueError(f"F must be a number in (0, 2] or a (low, high) dither range, got {F!r}")
    return F


def _check_prob(name: str, value) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not (0.0 < value < 1.0):
        raise ValueError(f"{name} must be None or a probability in (0, 1), got {value!r}")
    return value


# ---------------------------------------------------------------- the attack


class _Memo:
    """Every candidate evaluated so far, by its exact integer code (image index and floored
    values, radix-packed), with the probability and goal flag it gave: a candidate met
    again (late in a run most children repeat one) is looked up, not evaluated.

    Exact, so it never changes a result (for a deterministic model). Used when the codes
    fit in 62 bits, ``N * (H * W * 256**C) ** pixels < 2**62``: one pixel on CIFAR-10
    (N < 2**28) or ImageNet-sized images (N < 2**22); several pixels go without.
    """

    def __init__(self, n: int, pixels: int, c: int, h: int, w: int, device: torch.device) -> None:
        self.pixels, self.c, self.w = pixels, c, w
        self.radix = h * w * 256**c  # codes of one perturbed pixel
        self.span = self.radix**pixels  # codes of one candidate
        self.enabled = n * self.span < 2**62
        self.keys = torch.empty(0, dtype=torch.int64, device=device)  # sorted
        self.prob = torch.empty(0, dtype=torch.float64, device=device)
        self.adv = torch.empty(0, dtype=torch.bool, device=device)

    def encode(self, img: Tensor, q: Tensor) -> Tensor:
        qi = q.long().view(len(img), self.pixels, 2 + self.c)
        code = torch.zeros(len(img), dtype=torch.int64, device=img.device)
        for k in range(self.pixels):
            pc = qi[:, k, 0] * self.w + qi[:, k, 1]
            for ch in range(self.c):
                pc = pc * 256 + qi[:, k, 2 + ch]
            code = code * self.radix + pc
        return img * self.span + code

    def lookup(self, keys: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.keys.numel() == 0:
            return torch.zeros_like(keys, dtype=torch.bool), keys.new_zeros(keys.shape, dtype=torch.float64), \
                torch.zeros_like(keys, dtype=torch.bool)  # fmt: skip
        pos = torch.searchsorted(self.keys, keys).clamp_max(self.keys.numel() - 1)
        return self.keys[pos] == keys, self.prob[pos], self.adv[pos]

    def insert(self, keys: Tensor, prob: Tensor, adv: Tensor) -> None:
        k = torch.cat([self.keys, keys])
        k, order = k.sort()
        self.keys, self.prob, self.adv = k, torch.cat([self.prob, prob])[order], torch.cat([self.adv, adv])[order]

    def retain(self, img: Tensor) -> None:
        """Forget the images not in ``img`` (finished ones)."""
        keep = torch.isin(self.keys // self.span, img)
        self.keys, self.prob, self.adv = self.keys[keep], self.prob[keep], self.adv[keep]


class _Evaluator:
    """Fitness of candidates of several images in chunked forward passes.

    Returns per candidate the probability of the aimed class, whether the prediction
    meets the goal (argmax), and whether it also meets the early-stop threshold. Only
    candidates not met before (see :class:`_Memo`) reach the model, each once.
    """

    def __init__(self, model, x, aim, targeted, threshold, pixels, upper, batch_size, fwd, local=None):
        self.model, self.x, self.aim, self.targeted = model, x, aim, targeted
        self.threshold, self.pixels, self.upper, self.batch_size, self.fwd = threshold, pixels, upper, batch_size, fwd
        self.local = local  # LocalForward over x (one pixel), or None: full forward passes
        n, c, h, w = x.shape
        self.memo = _Memo(n, pixels, c, h, w, x.device)

    def _forward(self, img: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
        m = img.shape[0]
        prob = torch.empty(m, dtype=torch.float64, device=self.x.device)
        adv = torch.empty(m, dtype=torch.bool, device=self.x.device)
        with torch.no_grad():
            for s in range(0, m, self.batch_size):
                i, qi = img[s : s + self.batch_size], q[s : s + self.batch_size]
                if self.local is not None:
                    logits = self.local(i, qi[:, 0], qi[:, 1], qi[:, 2:] / 255.0)
                else:
                    logits = self.model(_apply(self.x[i], qi, self.pixels))
                aim = self.aim[i]
                prob[s : s + len(i)] = torch.softmax(logits.to(torch.float64), 1).gather(1, aim[:, None]).squeeze(1)
                pred = logits.argmax(1)
                adv[s : s + len(i)] = pred == aim if self.targeted else pred != aim
        self.fwd.index_add_(0, img, torch.ones_like(img))
        return prob, adv

    def __call__(self, img: Tensor, params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """img [M] (point indices), params [M, D] -> prob, adv, stop, each [M]."""
        q = _floored(params, self.upper)
        if self.memo.enabled:
            keys = self.memo.encode(img, q)
            hit, prob, adv = self.memo.lookup(keys)
            miss = (~hit).nonzero().flatten()
            new_keys, inverse = torch.unique(keys[miss], return_inverse=True)
            first = torch.full((len(new_keys),), len(miss), dtype=torch.int64, device=keys.device)
            first = first.scatter_reduce(0, inverse, torch.arange(len(miss), device=keys.device), "amin")
            rows = miss[first]
            p_new, a_new = self._forward(img[rows], q[rows])
            self.memo.insert(new_keys, p_new, a_new)
            prob[miss], adv[miss] = p_new[inverse], a_new[inverse]
        else:
            prob, adv = self._forward(img, q)
        stop = adv
        if self.threshold is not None:
            stop = adv & ((prob > self.threshold) if self.targeted else (prob < self.threshold))
        return prob, adv, stop


def one_pixel(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    pixels: int = 1,
    target: Tensor | None = None,
    popsize: int = 400,
    max_iter: int = 100,
    F: float | tuple[float, float] | None = None,
    strategy: str = "rand1",
    crossover: float | None = None,
    early_stop: float | None = None,
    batch_size: int | None = None,
    generator: torch.Generator | None = None,
    progress: bool = False,
    local_forward: bool | None = None,
) -> AttackResult:
    """Su et al.'s one-pixel (``pixels``-pixel) attack by differential evolution; see the
    module docstring for the algorithm, the reference behaviour and the deviations.

    Defaults are the paper's: 400 candidates per image, 100 generations, ``rand1`` with
    ``F = 0.5`` and no crossover. ``F=None`` takes the strategy's default (``rand1``: 0.5;
    ``best1bin``: dithered in (0.5, 1)); a ``(low, high)`` pair dithers. ``crossover=None``
    means none (the child is the mutant; Hyperparticle's ``recombination=1``).
    ``strategy="best1bin"`` with the other defaults is Hyperparticle's variant (which also
    uses ``max_iter=75``).

    Goal: untargeted, the prediction is not ``y``; targeted (``target`` given), it is
    ``target``. An image stops when one of its evaluated candidates meets the goal, and,
    with ``early_stop=p``, also has true-class probability < p (untargeted; the paper's
    ImageNet setting is 0.05) or target probability > p (targeted; paper's CIFAR setting
    0.5 or 0.9): until then the fittest adversarial candidate is kept. A point that meets
    the goal at ``x`` is returned unchanged (success) and not attacked.

    All images' populations evolve together, ``[N, P, pixels * (2 + C)]``; each generation
    evaluates the children of every image still running in forward passes of at most
    ``batch_size`` perturbed images (default 128 on a CPU, 256 with ``local_forward``,
    4096 on an accelerator); finished images are dropped from the tensors.

    ``local_forward``: evaluate one-pixel candidates with
    :class:`~advlab.models.local_forward.LocalForward`, which caches every clean image's
    activations and recomputes only the window of each layer that the pixel reaches (the
    same logits up to float summation order; 4-8x fewer multiply-adds on the CIFAR-10
    nets). ``None`` (default): whenever ``pixels == 1``, the model is supported (see
    :func:`~advlab.models.local_forward.supports`) and the cache fits in 2 GiB; ``True``:
    required (an error otherwise); ``False``: full forward passes.

    Points without an adversarial candidate come back as ``x`` with success False;
    success is judged by one forward pass on the returned points.
    counts: forward = 1 (clean) + candidates evaluated by the model (repeats of an
    already evaluated image are not) + 1 (the final judgement, for points returned
    perturbed); backward = 0.
    extra: "generations" (int64 [N], DE generations run), "best_fitness" (float64 [N],
    probability of the true / target class at the returned candidate, or, for failed
    points, at the fittest member of the final population; at ``x`` for points not
    attacked), "best_candidate" (int64 [N, pixels, 2 + C], the floored (row, col, values)
    of that candidate, -1 for points not attacked), "pixels" (int).
    """
    check_inputs(x, y, target)
    pixels = _as_int("pixels", pixels, 1)
    popsize = _as_int("popsize", popsize, 4)
    max_iter = _as_int("max_iter", max_iter, 0)
    if local_forward not in (None, True, False):
        raise ValueError(f"local_forward must be None, True or False, got {local_forward!r}")
    if local_forward and pixels != 1:
        raise ValueError(f"local_forward=True needs pixels == 1, got pixels={pixels}")
    if local_forward and not supports_local(model):
        raise ValueError("local_forward=True needs an eval-mode ImageClassifier or nn.Sequential "
                         "(see advlab.models.local_forward.supports)")  # fmt: skip
    use_local = bool(local_forward) or (local_forward is None and pixels == 1 and supports_local(model))
    if batch_size is None:
        if x.device.type != "cpu":
            batch_size = _DEFAULT_BATCH_ACCEL
        else:
            batch_size = _DEFAULT_BATCH_CPU_LOCAL if use_local else _DEFAULT_BATCH_CPU
    batch_size = _as_int("batch_size", batch_size, 1)
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    F = _check_f(F, strategy)
    crossover = None if crossover is None else float(crossover)
    if crossover is not None and not (0.0 <= crossover <= 1.0):
        raise ValueError(f"crossover must be None or a probability in [0, 1], got {crossover!r}")
    early_stop = _check_prob("early_stop", early_stop)
    n, c, h, w = x.shape
    if pixels > h * w:
        raise ValueError(f"pixels must be <= H * W = {h * w}, got {pixels}")
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    dev = x.device
    x_nat = x.detach()
    y = y.to(dev)
    targeted = target is not None
    fwd = torch.zeros(n, dtype=torch.int64, device=dev)

    logits0 = _logits(model, x_nat, batch_size)
    fwd += 1
    if logits0.dim() != 2 or logits0.shape[1] < 2:
        raise ValueError(f"the model must output [N, C >= 2] logits, got {tuple(logits0.shape)}")
    n_classes = logits0.shape[1]
    if int(y.max()) >= n_classes:
        raise ValueError(f"y holds class {int(y.max())} but the model has {n_classes} classes")
    if targeted:
        target = target.to(dev)
        if int(target.max()) >= n_classes:
            raise ValueError(f"target holds class {int(target.max())} but the model has {n_classes} classes")
    aim = target if targeted else y
    pred0 = logits0.argmax(1)
    done0 = pred0 == aim if targeted else pred0 != aim

    d = pixels * (2 + c)
    upper = torch.tensor([h, w] + [_COLOUR_RANGE] * c, dtype=torch.float64, device=dev).repeat(pixels)
    keys = _point_keys(x_nat, y, target, generator).to(dev)
    local = None
    if use_local and not bool(done0.all()):
        attacked = (~done0).nonzero().flatten()
        per_image = LocalForward(model, x_nat[attacked[:1]]).memory_bytes
        if local_forward or per_image * n <= _LOCAL_CACHE_BYTES:
            # cached for every point (finished ones are never asked for), built in chunks
            local = LocalForward(model, x_nat)
    evaluate = _Evaluator(model, x_nat, aim, targeted, early_stop, pixels, upper, batch_size, fwd, local)

    found = torch.zeros(n, dtype=torch.bool, device=dev)
    kept = torch.zeros(n, d, dtype=torch.float64, device=dev)  # candidate returned per point
    kept_energy = torch.full((n,), math.inf, dtype=torch.float64, device=dev)
    kept_prob = torch.softmax(logits0.to(torch.float64), 1).gather(1, aim[:, None]).squeeze(1)
    generations = torch.zeros(n, dtype=torch.int64, device=dev)
    sign = -1.0 if targeted else 1.0  # energy = sign * prob, minimised

    idx = (~done0).nonzero().flatten()
    pop = _initial(keys[idx], popsize, pixels, c, h, w)
    img = idx.repeat_interleave(popsize)
    prob, adv, stop = (t.view(-1, popsize) for t in evaluate(img, pop.view(-1, d)))
    energy = sign * prob

    def keep_adversarial(rows: Tensor, cand: Tensor, e: Tensor, p: Tensor, ok: Tensor) -> None:
        """Remember each image's fittest adversarial candidate seen so far."""
        e_adv = torch.where(ok, e, math.inf)
        j = e_adv.argmin(1)
        best_e = e_adv.gather(1, j[:, None]).squeeze(1)
        better = best_e < kept_energy[rows]
        sel = rows[better]
        found[sel] = True
        kept_energy[sel] = best_e[better]
        kept_prob[sel] = p.gather(1, j[:, None]).squeeze(1)[better]
        kept[sel] = cand[better, j[better]]

    keep_adversarial(idx, pop, energy, prob, adv)
    running = ~stop.any(1)

    bar = tqdm(total=max_iter, desc="one_pixel", disable=not progress, leave=False)
    for gen in range(1, max_iter + 1):
        if not bool(running.all()):
            idx, pop, energy, prob = idx[running], pop[running], energy[running], prob[running]
            if evaluate.memo.enabled:
                evaluate.memo.retain(idx)
        if idx.numel() == 0:
            bar.update(max_iter - gen + 1)
            break
        child = _children(pop, energy, keys[idx], gen, strategy=strategy, F=F, crossover=crossover, upper=upper)
        # a child that floors to its parent's values is the same image: not fitter
        new = (_floored(child, upper) != _floored(pop, upper)).any(-1)
        a_i, p_i = new.nonzero(as_tuple=True)
        c_prob, c_adv, c_stop = evaluate(idx[a_i], child[a_i, p_i])
        child_prob = torch.full_like(prob, math.nan).index_put_((a_i, p_i), c_prob)
        child_adv = torch.zeros_like(new).index_put_((a_i, p_i), c_adv)
        child_stop = torch.zeros_like(new).index_put_((a_i, p_i), c_stop)
        child_energy = torch.where(new, sign * child_prob, math.inf)
        keep_adversarial(idx, child, child_energy, child_prob, child_adv)
        better = child_energy < energy
        pop = torch.where(better[..., None], child, pop)
        energy = torch.where(better, child_energy, energy)
        prob = torch.where(better, child_prob, prob)
        generations[idx] += 1
        running = ~child_stop.any(1)
        bar.update(1)
        bar.set_postfix(running=int(running.sum()))
    bar.close()

    # failed points report the fittest member of their final population
    lost = idx[~found[idx]]
    if lost.numel():
        rows = ~found[idx]
        j = energy[rows].argmin(1)
        kept[lost] = pop[rows].gather(1, j.view(-1, 1, 1).expand(-1, 1, d)).squeeze(1)
        kept_prob[lost] = prob[rows].gather(1, j[:, None]).squeeze(1)
    attacked = ~done0
    best_candidate = torch.where(attacked[:, None], _floored(kept, upper).long(), -1).view(n, pixels, 2 + c)

    x_adv = x_nat.clone()
    success = done0.clone()
    out = found.nonzero().flatten()
    if out.numel():
        x_out = _apply(x_nat[out], _floored(kept[out], upper), pixels)
        pred = _logits(model, x_out, batch_size).argmax(1)
        fwd[out] += 1
        ok = pred == aim[out] if targeted else pred != aim[out]
        x_adv[out[ok]] = x_out[ok]  # a float tie lost at the judgement falls back to x
        success[out] = ok
    return make_result(
        x_nat, x_adv, success, fwd, torch.zeros_like(fwd),
        generations=generations, best_fitness=kept_prob, best_candidate=best_candidate, pixels=pixels,
    )  # fmt: skip
