"""Lightning training: data modules, the natural, distilled and adversarial
classifiers, sparse-autoencoder pretraining, seeded fits, the black-box substitute."""

from .adversarial import METHODS as ADVERSARIAL_METHODS
from .adversarial import AdversarialClassifier, AdversarialTrainResult, fit_adversarial
from .autoencoder import AUTOENCODER_HISTORY_COLUMNS, PretrainResult, SparseAutoencoder, pretrain_autoencoder
from .classifier import LR_SCHEDULES, OPTIMIZERS, NaturalClassifier
from .datamodule import ArrayDataModule
from .distillation import DistilledClassifier, TemperatureScaled, fit_distillation, soft_labels
from .finetune import fine_tune
from .fit import HISTORY_COLUMNS, TrainResult, fit_classifier, fit_module
from .substitute import SUBSTITUTE_HISTORY_COLUMNS, SubstituteResult, train_substitute

__all__ = [
    "ADVERSARIAL_METHODS",
    "AUTOENCODER_HISTORY_COLUMNS",
    "HISTORY_COLUMNS",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "SUBSTITUTE_HISTORY_COLUMNS",
    "AdversarialClassifier",
    "AdversarialTrainResult",
    "ArrayDataModule",
    "DistilledClassifier",
    "NaturalClassifier",
    "PretrainResult",
    "SparseAutoencoder",
    "SubstituteResult",
    "TemperatureScaled",
    "TrainResult",
    "fit_adversarial",
    "fit_classifier",
    "fit_distillation",
    "fine_tune",
    "fit_module",
    "pretrain_autoencoder",
    "soft_labels",
    "train_substitute",
]
