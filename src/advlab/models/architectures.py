"""Architectures from the seed papers, as ``nn.Sequential`` bodies without normalisation.

Every builder takes ``(in_channels, size, num_classes, **options)`` where ``size``
is ``(H, W)``; the options are what the registry exposes as keyword arguments.
Layer names follow the papers so that ported weights can be mapped by name.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from .layers import GlobalAvgPool


def _flat_features(features: nn.Module, in_channels: int, size: tuple[int, int]) -> int:
    too_small = f"input {in_channels}x{size[0]}x{size[1]} is too small for this architecture"
    try:
        with torch.no_grad():
            out = features(torch.zeros(1, in_channels, *size))
    except RuntimeError as exc:  # a kernel larger than the feature map
        raise ValueError(f"{too_small} ({exc})") from exc
    if out.numel() == 0:
        raise ValueError(too_small)
    return out[0].numel()


def _seq(layers: list[tuple[str, nn.Module]]) -> nn.Sequential:
    return nn.Sequential(OrderedDict(layers))


def fc(in_channels: int, size: tuple[int, int], num_classes: int, *, widths: Sequence[int] = (500, 150)):
    """Fully connected ReLU net; ``widths=[]`` is softmax regression (one linear layer)."""
    dims = [in_channels * size[0] * size[1], *[int(w) for w in widths], num_classes]
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i in range(len(dims) - 1):
        layers.append((f"fc{i + 1}", nn.Linear(dims[i], dims[i + 1])))
        if i < len(dims) - 2:
            layers.append((f"relu{i + 1}", nn.ReLU()))
    return _seq(layers)


def ae_softmax(in_channels: int, size: tuple[int, int], num_classes: int, *, code: int = 400):
    """Szegedy et al.'s AE400-10: the sigmoid code of an autoencoder, then a softmax layer.

    flatten -> ``encoder`` (Linear to ``code`` units) -> ``sigmoid`` -> ``fc`` (logits).
    The encoder is meant to be pretrained as a sparse autoencoder
    (:func:`advlab.training.pretrain_autoencoder`) before the whole net is fine-tuned.
    """
    n = in_channels * size[0] * size[1]
    return _seq([
        ("flatten", nn.Flatten()),
        ("encoder", nn.Linear(n, int(code))),
        ("sigmoid", nn.Sigmoid()),
        ("fc", nn.Linear(int(code), num_classes)),
    ])


def wong_cnn(in_channels: int, size: tuple[int, int], num_classes: int):
    """The small MNIST CNN of Wong et al. 2020 ("Fast is better than free") and Wong & Kolter
    2018: conv16@4x4/2 -> ReLU -> conv32@4x4/2 -> ReLU -> FC100 -> ReLU -> FC.

    About a quarter of LeNet's multiply-adds, with ReLUs throughout: the architecture for
    adversarial training on a CPU budget.
    """
    features = _seq([
        ("conv1", nn.Conv2d(in_channels, 16, 4, stride=2, padding=1)),
        ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(16, 32, 4, stride=2, padding=1)),
        ("relu2", nn.ReLU()),
        ("flatten", nn.Flatten()),
    ])
    n = _flat_features(features, in_channels, size)
    return _seq([*features.named_children(), ("fc1", nn.Linear(n, 100)), ("relu3", nn.ReLU()),
                 ("fc2", nn.Linear(100, num_classes))])


def lenet(in_channels: int, size: tuple[int, int], num_classes: int):
    """DeepFool's MNIST LeNet (MatConvNet ``cnn_mnist``).

    conv20@5x5 -> maxpool2 -> conv50@5x5 -> maxpool2 -> FC500 -> ReLU -> FC. There is
    deliberately no ReLU after the convolutions: the reference network has none.
    MatConvNet's ``conv 500@4x4`` on the 4x4 map is exactly the FC500 layer here.
    """
    features = _seq([
        ("conv1", nn.Conv2d(in_channels, 20, 5)),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(20, 50, 5)),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
    ])
    n = _flat_features(features, in_channels, size)
    return _seq([*features.named_children(), ("fc1", nn.Linear(n, 500)), ("relu", nn.ReLU()),
                 ("fc2", nn.Linear(500, num_classes))])


def madry_cnn(in_channels: int, size: tuple[int, int], num_classes: int):
    """Madry et al.'s MNIST CNN (mnist_challenge ``model.py``), 'same' padding."""
    features = _seq([
        ("conv1", nn.Conv2d(in_channels, 32, 5, padding=2)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(32, 64, 5, padding=2)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
    ])
    n = _flat_features(features, in_channels, size)
    return _seq([*features.named_children(), ("fc1", nn.Linear(n, 1024)), ("relu3", nn.ReLU()),
                 ("fc2", nn.Linear(1024, num_classes))])


CW_MNIST_WIDTHS = (32, 32, 64, 64, 200, 200)
CW_CIFAR_WIDTHS = (64, 64, 128, 128, 256, 256)


def cw_cnn(
    in_channels: int,
    size: tuple[int, int],
    num_classes: int,
    *,
    widths: Sequence[int] | None = None,
    dropout: float = 0.5,
):
    """Carlini–Wagner / defensive-distillation net (nn_robust_attacks ``train_models.py``).

    ``widths`` = (conv1, conv2, conv3, conv4, fc1, fc2); ``None`` picks the MNIST
    widths for 1 channel and the CIFAR widths otherwise. 'valid' padding; dropout
    after the first FC layer only, as in the reference code.
    """
    if widths is None:
        widths = CW_MNIST_WIDTHS if in_channels == 1 else CW_CIFAR_WIDTHS
    if len(widths) != 6:
        raise ValueError(f"cw_cnn widths needs 6 values (4 conv, 2 fc), got {list(widths)}")
    c1, c2, c3, c4, f1, f2 = (int(w) for w in widths)
    features = _seq([
        ("conv1", nn.Conv2d(in_channels, c1, 3)), ("relu1", nn.ReLU()),
        ("conv2", nn.Conv2d(c1, c2, 3)), ("relu2", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv3", nn.Conv2d(c2, c3, 3)), ("relu3", nn.ReLU()),
        ("conv4", nn.Conv2d(c3, c4, 3)), ("relu4", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
    ])
    n = _flat_features(features, in_channels, size)
    return _seq([
        *features.named_children(),
        ("fc1", nn.Linear(n, f1)), ("relu5", nn.ReLU()), ("dropout", nn.Dropout(dropout)),
        ("fc2", nn.Linear(f1, f2)), ("relu6", nn.ReLU()),
        ("fc3", nn.Linear(f2, num_classes)),
    ])


def allconv(
    in_channels: int,
    size: tuple[int, int],
    num_classes: int,
    *,
    widths: Sequence[int] = (32, 64),
    dropout: float = 0.0,
    batch_norm: bool = False,
):
    """All-Convolutional net (Springenberg et al. 2015, All-CNN-C layout), narrowed.

    The paper's widths are ``(96, 192)``; the default ``(32, 64)`` trains on a laptop
    CPU. Strided 3x3 convolutions replace pooling; the classifier is a 1x1 conv
    followed by global average pooling. ``dropout`` follows each strided conv.
    """
    if len(widths) != 2:
        raise ValueError(f"allconv widths needs 2 values, got {list(widths)}")
    a, b = (int(w) for w in widths)
    layers: list[tuple[str, nn.Module]] = []

    def conv(name: str, cin: int, cout: int, k: int, stride: int = 1, padding: int = 1) -> None:
        layers.append((name, nn.Conv2d(cin, cout, k, stride=stride, padding=padding)))
        if batch_norm:
            layers.append((f"{name}_bn", nn.BatchNorm2d(cout)))
        layers.append((f"{name}_relu", nn.ReLU()))

    conv("conv1", in_channels, a, 3)
    conv("conv2", a, a, 3)
    conv("conv3", a, a, 3, stride=2)
    if dropout:
        layers.append(("drop1", nn.Dropout(dropout)))
    conv("conv4", a, b, 3)
    conv("conv5", b, b, 3)
    conv("conv6", b, b, 3, stride=2)
    if dropout:
        layers.append(("drop2", nn.Dropout(dropout)))
    conv("conv7", b, b, 3, padding=0)
    conv("conv8", b, b, 1, padding=0)
    layers += [("conv9", nn.Conv2d(b, num_classes, 1)), ("gap", GlobalAvgPool())]
    net = _seq(layers)
    _flat_features(net, in_channels, size)  # fail early on too-small inputs
    return net


def nin(
    in_channels: int,
    size: tuple[int, int],
    num_classes: int,
    *,
    widths: Sequence[int] = (96, 80, 48),
    dropout: float = 0.5,
):
    """Network-in-Network (Lin et al. 2014, CIFAR-10 layout, as MatConvNet ``cnn_cifar``).

    Three mlpconv blocks (5x5 + two 1x1, 5x5 + two 1x1, 3x3 + 1x1 + class 1x1), max
    then average pooling, global average pooling. The paper's widths are
    ``(192, 160, 96)``; the default halves them.
    """
    if len(widths) != 3:
        raise ValueError(f"nin widths needs 3 values, got {list(widths)}")
    a, b, c = (int(w) for w in widths)
    relu = nn.ReLU
    net = _seq([
        ("conv1", nn.Conv2d(in_channels, a, 5, padding=2)), ("relu1", relu()),
        ("cccp1", nn.Conv2d(a, b, 1)), ("relu_cccp1", relu()),
        ("cccp2", nn.Conv2d(b, c, 1)), ("relu_cccp2", relu()),
        ("pool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        ("drop1", nn.Dropout(dropout)),
        ("conv2", nn.Conv2d(c, a, 5, padding=2)), ("relu2", relu()),
        ("cccp3", nn.Conv2d(a, a, 1)), ("relu_cccp3", relu()),
        ("cccp4", nn.Conv2d(a, a, 1)), ("relu_cccp4", relu()),
        ("pool2", nn.AvgPool2d(3, stride=2, ceil_mode=True)),
        ("drop2", nn.Dropout(dropout)),
        ("conv3", nn.Conv2d(a, a, 3, padding=1)), ("relu3", relu()),
        ("cccp5", nn.Conv2d(a, a, 1)), ("relu_cccp5", relu()),
        ("cccp6", nn.Conv2d(a, num_classes, 1)),
        ("gap", GlobalAvgPool()),
    ])
    _flat_features(net, in_channels, size)
    return net


VGG16_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
VGG16_HIDDEN = 2048  # the one-pixel paper's VGG16 classifier width (two FC layers; recalled, verify)


def vgg16(
    in_channels: int,
    size: tuple[int, int],
    num_classes: int,
    *,
    width: float = 0.25,
    batch_norm: bool = True,
    dropout: float = 0.5,
):
    """VGG-16 for small images (Simonyan & Zisserman 2015, configuration D), the third
    CIFAR-10 net of the one-pixel paper (Su et al. 2019).

    Thirteen 3x3 convolutions (padding 1) in five blocks of widths (64, 64 | 128, 128 |
    256 x3 | 512 x3 | 512 x3), each block followed by 2x2 max pooling, then
    ``fc1 -> ReLU -> dropout -> fc2 -> ReLU -> dropout -> fc3``. The paper's widths are
    those (``width=1``) with 2048-unit FC layers; ``width`` scales every conv and FC
    width (rounded, at least 1), and the default 1/4 (16 ... 128 channels, 512-unit FC
    layers, about 1/16 of the multiply-adds) trains on a CPU in minutes.

    The poolings use ``ceil_mode`` so that 28x28 inputs (28, 14, 7, 4, 2, 1) reach a
    1x1 map like 32x32 ones do, and an adaptive average pooling to 1x1 before the
    classifier keeps its input at the last block's width for any input size.
    ``batch_norm`` (default on) puts a BatchNorm after every convolution: without it a
    13-layer plain stack barely trains from scratch in a few epochs.
    """
    if not (width > 0):
        raise ValueError(f"vgg16 width must be > 0, got {width}")

    def scaled(c: int) -> int:
        return max(1, int(round(c * width)))

    layers: list[tuple[str, nn.Module]] = []
    cin = in_channels
    for b, block in enumerate(VGG16_BLOCKS, start=1):
        for i, c in enumerate(block, start=1):
            cout = scaled(c)
            layers.append((f"conv{b}_{i}", nn.Conv2d(cin, cout, 3, padding=1)))
            if batch_norm:
                layers.append((f"conv{b}_{i}_bn", nn.BatchNorm2d(cout)))
            layers.append((f"conv{b}_{i}_relu", nn.ReLU()))
            cin = cout
        layers.append((f"pool{b}", nn.MaxPool2d(2, ceil_mode=True)))
    layers += [("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten())]
    hidden = scaled(VGG16_HIDDEN)
    layers += [
        ("fc1", nn.Linear(cin, hidden)), ("relu_fc1", nn.ReLU()), ("drop1", nn.Dropout(dropout)),
        ("fc2", nn.Linear(hidden, hidden)), ("relu_fc2", nn.ReLU()), ("drop2", nn.Dropout(dropout)),
        ("fc3", nn.Linear(hidden, num_classes)),
    ]
    net = _seq(layers)
    # fail early on unusable inputs; in eval mode, so that the probe leaves the
    # BatchNorm running statistics at their initial values
    _flat_features(net.eval(), in_channels, size)
    return net.train()
