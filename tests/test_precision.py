"""Importing advlab turns TF32 off (on an H200 it cost C&W L2 a third of its successes on LeNet)."""
from __future__ import annotations

import os
import subprocess
import sys


def _flags(**env_extra) -> list[str]:
    """cuDNN's and cuBLAS's TF32 flags after `import advlab` in a fresh interpreter."""
    code = "import torch, advlab; print(torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)"
    env = {k: v for k, v in os.environ.items() if k != "ADVLAB_ALLOW_TF32"} | env_extra
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.split()


def test_importing_advlab_turns_tf32_off():
    assert _flags() == ["False", "False"]


def test_tf32_can_be_kept_on_request():
    assert _flags(ADVLAB_ALLOW_TF32="1")[0] == "True"  # cuDNN's own default
