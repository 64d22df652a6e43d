"""advlab.models: registry, normalisation inside the model, checkpoints, inference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advlab.models import (
    MODEL_NAMES,
    CheckpointError,
    accuracy,
    build_model,
    load_checkpoint,
    predict,
    predict_logits,
    save_checkpoint,
)

SHAPES = {"mnist": (1, 28), "cifar": (3, 32)}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny forward passes: one thread is as fast, and immune to OpenMP spin-waiting
    # when other jobs share the cores.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _x(c: int, s: int, n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def test_registry_lists_the_paper_models():
    assert MODEL_NAMES == sorted(MODEL_NAMES)
    expected = {"fc", "fc500_150", "fc100_100", "fc200_200", "fc123_456", "fc10", "ae400_10", "lenet", "wong_cnn",
                "madry_cnn", "cw_cnn"}
    assert expected <= set(MODEL_NAMES)
    assert {"allconv", "nin"} & set(MODEL_NAMES)


@pytest.mark.parametrize("shape", SHAPES, ids=list(SHAPES))
@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_builds_and_returns_logits(name: str, shape: str):
    c, s = SHAPES[shape]
    model = build_model(name, in_channels=c, image_size=s, init_seed=0).eval()
    out = model(_x(c, s))
    assert out.shape == (4, 10) and out.dtype == torch.float32 and torch.isfinite(out).all()
    state = model.state_dict()
    assert state["normalize.mean"].shape == (c, 1, 1) and state["normalize.std"].shape == (c, 1, 1)
    assert model.arch == name and model.input_shape == (c, s, s)


def test_normalisation_is_inside_and_per_channel():
    mean, std = [0.49, 0.48, 0.45], [0.25, 0.24, 0.26]
    model = build_model("allconv", in_channels=3, image_size=32, mean=mean, std=std, init_seed=1).eval()
    assert model.state_dict()["normalize.mean"].flatten().tolist() == pytest.approx(mean)
    x = _x(3, 32)
    m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
    torch.testing.assert_close(model(x), model.net((x - m) / s))
    plain = build_model("lenet", in_channels=1, image_size=28)
    assert float(plain.normalize.mean) == 0.0 and float(plain.normalize.std) == 1.0
    scalar = build_model("lenet", in_channels=3, image_size=32, mean=0.5, std=0.5)
    assert scalar.normalize.mean.flatten().tolist() == [0.5] * 3
    with pytest.raises(ValueError, match="3 input channels"):
        build_model("lenet", in_channels=3, image_size=32, mean=[0.1, 0.2])
    with pytest.raises(ValueError, match="positive"):
        build_model("lenet", in_channels=1, image_size=28, std=0.0)


def test_lenet_matches_the_deepfool_reference():
    model = build_model("lenet", in_channels=1, image_size=28)
    layers = [type(m).__name__ for m in model.net]
    # No ReLU after either convolution, exactly as MatConvNet cnn_mnist.
    assert layers == ["Conv2d", "MaxPool2d", "Conv2d", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    assert model.net.conv1.out_channels == 20 and model.net.conv2.out_channels == 50
    assert model.net.fc1.in_features == 50 * 4 * 4 and model.net.fc1.out_features == 500


def test_fc_family_widths():
    assert [m.out_features for m in build_model("fc500_150", in_channels=1, image_size=28).modules()
            if isinstance(m, nn.Linear)] == [500, 150, 10]
    fc10 = build_model("fc10", in_channels=1, image_size=28)
    assert [type(m).__name__ for m in fc10.net] == ["Flatten", "Linear"]
    custom = build_model("fc", in_channels=1, image_size=28, widths=[64, 32, 16])
    assert custom.arch_kwargs["widths"] == [64, 32, 16]
    with pytest.raises(TypeError, match="unknown option"):
        build_model("fc500_150", in_channels=1, image_size=28, widths=[10])


def test_szegedy_models():
    fc123 = build_model("fc123_456", in_channels=1, image_size=28)
    assert [m.out_features for m in fc123.modules() if isinstance(m, nn.Linear)] == [123, 456, 10]
    ae = build_model("ae400_10", in_channels=1, image_size=28, init_seed=0)
    # Named so that the sparse-autoencoder pretraining can find (and share) the encoder.
    assert [(n, type(m).__name__) for n, m in ae.net.named_children()] == [
        ("flatten", "Flatten"), ("encoder", "Linear"), ("sigmoid", "Sigmoid"), ("fc", "Linear")]
    assert (ae.net.encoder.in_features, ae.net.encoder.out_features) == (784, 400)
    assert (ae.net.fc.in_features, ae.net.fc.out_features) == (400, 10)
    assert "code" not in ae.arch_kwargs
    with pytest.raises(TypeError, match="unknown option"):
        build_model("ae400_10", in_channels=1, image_size=28, code=100)


def test_madry_and_cw_architectures():
    madry = build_model("madry_cnn", in_channels=1, image_size=28)
    assert madry.net.fc1.in_features == 64 * 7 * 7 and madry.net.fc1.out_features == 1024
    cw_mnist = build_model("cw_cnn", in_channels=1, image_size=28)
    cw_cifar = build_model("cw_cnn", in_channels=3, image_size=32)
    assert cw_mnist.net.conv1.out_channels == 32 and cw_mnist.net.fc1.out_features == 200
    assert cw_cifar.net.conv1.out_channels == 64 and cw_cifar.net.fc1.out_features == 256
    assert isinstance(cw_mnist.net.dropout, nn.Dropout) and cw_mnist.net.dropout.p == 0.5


def test_build_options_are_checked():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet1000", in_channels=1, image_size=28)
    with pytest.raises(TypeError, match="unknown option"):
        build_model("lenet", in_channels=1, image_size=28, widths=[1])
    with pytest.raises(ValueError, match="too small"):
        build_model("lenet", in_channels=1, image_size=8)
    five = build_model("madry_cnn", in_channels=1, image_size=28, num_classes=5)
    assert five(_x(1, 28)).shape == (4, 5)


def test_init_seed_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = build_model("cw_cnn", in_channels=1, image_size=28, init_seed=3)
    b = build_model("cw_cnn", in_channels=1, image_size=28, init_seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())


# -- checkpoints -----------------------------------------------------------------


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_checkpoint_round_trip(tmp_path: Path, name: str):
    c, s = (3, 32) if name in ("allconv", "nin") else (1, 28)
    model = build_model(name, in_channels=c, image_size=s, mean=0.1, std=0.3, init_seed=0).eval()
    meta = {"dataset": "mnist5k", "test_acc": 0.97, "epochs": 3, "history": [0.5, 0.9], "note": None}
    path = save_checkpoint(tmp_path / "models" / f"{name}.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(path)
    assert loaded_meta == meta and loaded.arch == name and not loaded.training
    assert loaded.arch_kwargs == model.arch_kwargs
    x = _x(c, s)
    assert torch.equal(loaded(x), model(x))
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left


def test_checkpoint_file_layout_is_plain(tmp_path: Path):
    model = build_model("cw_cnn", in_channels=3, image_size=32, widths=[8, 8, 16, 16, 32, 32])
    path = save_checkpoint(tmp_path / "m.pt", model, {"k": [1, 2]})
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "advlab-checkpoint/1" and payload["arch"] == "cw_cnn"
    assert payload["arch_kwargs"]["widths"] == [8, 8, 16, 16, 32, 32]
    assert set(payload) == {"format", "arch", "arch_kwargs", "state_dict", "meta"}
    # Overwriting an existing file works and stays atomic.
    save_checkpoint(path, model, {"k": [3]})
    assert load_checkpoint(path)[1] == {"k": [3]}


@pytest.mark.faults_bad_input
def test_truncated_checkpoint(tmp_path: Path):
    path = save_checkpoint(tmp_path / "m.pt", build_model("lenet", in_channels=1, image_size=28), {})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_not_a_checkpoint(tmp_path: Path):
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.pt"):
        load_checkpoint(text)
    bare = tmp_path / "bare.pt"
    torch.save(build_model("lenet", in_channels=1, image_size=28).state_dict(), bare)
    with pytest.raises(CheckpointError, match="not an advlab checkpoint") as info:
        load_checkpoint(bare)
    assert str(bare) in str(info.value)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.faults_bad_input
def test_architecture_mismatch_names_path_arch_and_key(tmp_path: Path):
    path = save_checkpoint(tmp_path / "m.pt", build_model("lenet", in_channels=1, image_size=28), {})
    payload = torch.load(path, weights_only=True)
    payload["arch"] = "madry_cnn"
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert str(path) in msg and "'madry_cnn'" in msg and "net.conv1.weight" in msg

    payload = torch.load(save_checkpoint(tmp_path / "fc.pt", build_model(
        "fc", in_channels=1, image_size=28, widths=[30]), {}), weights_only=True)
    payload["arch_kwargs"]["widths"] = [40]
    torch.save(payload, tmp_path / "fc.pt")
    with pytest.raises(CheckpointError, match=r"'net.fc1.weight' has shape \(30, 784\)"):
        load_checkpoint(tmp_path / "fc.pt")


class _Exploit:
    """Unpickling this would create ``marker``: stands in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_pickle_bearing_file_is_refused_without_running_code(tmp_path: Path):
    marker = tmp_path / "code-ran"
    model = build_model("lenet", in_channels=1, image_size=28)
    path = save_checkpoint(tmp_path / "m.pt", model, {})
    payload = torch.load(path, weights_only=True)
    payload["meta"] = {"innocent": _Exploit(marker)}
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="refused") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert not marker.exists()
    # The payload is live: a trusting loader would have run it.
    torch.load(path, weights_only=False)  # untrusted-ok: the test shows what weights_only=True prevents
    assert marker.exists()


def test_save_checkpoint_rejects_what_cannot_be_loaded_safely(tmp_path: Path):
    model = build_model("lenet", in_channels=1, image_size=28)
    with pytest.raises(TypeError, match="plain"):
        save_checkpoint(tmp_path / "m.pt", model, {"when": object()})
    with pytest.raises(TypeError, match="build_model"):
        save_checkpoint(tmp_path / "m.pt", nn.Linear(2, 2), {})
    assert not any(tmp_path.iterdir())


# -- inference -------------------------------------------------------------------


def test_predict_and_accuracy_batching():
    model = build_model("fc100_100", in_channels=1, image_size=28, init_seed=0).train()
    x = _x(1, 28, n=25)
    logits = predict_logits(model, x, batch_size=7)
    torch.testing.assert_close(logits, model.eval()(x))
    model.train()
    labels = predict(model, x, batch_size=4)
    assert model.training  # mode restored
    assert labels.dtype == torch.int64 and torch.equal(labels, logits.argmax(1))
    assert accuracy(model, x, labels) == 1.0
    assert accuracy(model, x, (labels + 1) % 10, batch_size=3) == 0.0
    assert predict(model, x[:0]).shape == (0,)
