"""Importing advlab turns TF32 off (on an H200 it cost C&W L2 a third of its successes on LeNet)."""
from __future__ import annotations

import os
import subprocess
import sys


def _flags(env_extra: dict) -> str:
    code = "import torch, advlab; print(torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)"
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_importing_advlab_turns_tf32_off():
    env = {k: v for k, v in os.environ.items() if k != "ADVLAB_ALLOW_TF32"}
    code = "import torch, advlab; print(torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_tf32_can_be_kept_on_request():
    assert _flags({"ADVLAB_ALLOW_TF32": "1"}).split()[0] == "True"  # cuDNN's own default
