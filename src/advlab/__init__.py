"""advlab: adversarial-robustness research on image classifiers.

Importing advlab turns TF32 off in PyTorch's CUDA kernels (cuDNN convolutions allow it by default).
TF32 rounds products to a 10-bit mantissa: logits move by ~1e-3, and points that minimal attacks
(C&W, DeepFool) leave just past the decision boundary flip back when the returned image is judged
again at another batch size. Measured on an H200 (LeNet, full MNIST, C&W L2 9 x 1000 on 100 points):
66% success with cuDNN's TF32, 100% without, at the same speed. Set ADVLAB_ALLOW_TF32=1 before
importing to keep PyTorch's defaults.
"""
from __future__ import annotations

import os

import torch

if os.environ.get("ADVLAB_ALLOW_TF32") != "1":
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
