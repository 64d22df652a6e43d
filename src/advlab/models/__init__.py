"""Architectures by name; normalisation inside the model; logits out."""

from .checkpoint import FORMAT as CHECKPOINT_FORMAT
from .checkpoint import CheckpointError, checkpoint_payload, load_checkpoint, save_checkpoint
from .inference import accuracy, evaluate_accuracy, predict, predict_logits
from .layers import ImageClassifier, Normalize
from .local_forward import LocalForward
from .registry import MODEL_NAMES, build_model

__all__ = [
    "CHECKPOINT_FORMAT",
    "MODEL_NAMES",
    "CheckpointError",
    "ImageClassifier",
    "LocalForward",
    "Normalize",
    "accuracy",
    "build_model",
    "evaluate_accuracy",
    "load_checkpoint",
    "predict",
    "predict_logits",
    "checkpoint_payload",
    "save_checkpoint",
]
