"""Where every artifact lives. Patterns use Snakemake's wildcard syntax ({preset}, {model},
{attack}); the Snakefile, the DVC generator and the stages all format these same strings."""
from __future__ import annotations

from pathlib import Path

from pipeline.config import ROOT

PREPARED_TENSORS = "data/prepared/{preset}/tensors.pt"
PREPARED_META = "data/prepared/{preset}/meta.json"

MODEL = "models/{preset}/{model}.pt"
TRAIN_METRICS = "metrics/{preset}/train/{model}.json"
TRAIN_HISTORY = "results/{preset}/train/{model}/history.csv"

# Defended variants are models named <arch>-<defense>: same folders, their own producing stage.
DEFENDED_MODEL = "models/{preset}/{arch}-{defense}.pt"
DEFENDED_TRAIN_METRICS = "metrics/{preset}/train/{arch}-{defense}.json"
DEFENDED_TRAIN_HISTORY = "results/{preset}/train/{arch}-{defense}/history.csv"

ADV_EXAMPLES = "results/{preset}/attacks/{model}/{attack}.pt"
ADV_TABLE = "results/{preset}/attacks/{model}/{attack}.csv"
ADV_TIMING = "results/{preset}/attacks/{model}/{attack}.timing.json"
ATTACKS_DIR = "results/{preset}/attacks"

ROBUSTNESS = "metrics/{preset}/robustness.json"
TIMING = "metrics/{preset}/timing.json"
SUMMARY = "results/{preset}/eval/summary.csv"

# Studies (issue 3). Their models live beside their results, not in models/<preset>/, so that the
# evaluate stage (which DVC points at the models/<preset> folder) does not rerun when they change.
# Madry et al.'s table: A' is an independently trained copy of the defended model.
COPY_MODEL = "results/{preset}/madry_table/copy/{model}.pt"
COPY_TRAIN_METRICS = "results/{preset}/madry_table/copy/{model}.json"
COPY_TRAIN_HISTORY = "results/{preset}/madry_table/copy/{model}.history.csv"
MADRY_TABLE = "results/{preset}/madry_table/table.csv"
MADRY_METRICS = "metrics/{preset}/madry_table.json"

# DeepFool's Tables 1-3 and Figures 6-7, per naturally trained model.
DF_STUDY_METRICS = "metrics/{preset}/deepfool_study/{model}.json"
DF_STUDY_TIMING = "results/{preset}/deepfool_study/{model}/timing.json"
DF_FINETUNE = "results/{preset}/deepfool_study/{model}/finetune.csv"

# Szegedy et al.'s transfer tables: their own small models, then the cross-model tables.
TRANSFER_MODEL = "results/{preset}/transfer/models/{tmodel}.pt"
TRANSFER_TRAIN_METRICS = "results/{preset}/transfer/models/{tmodel}.json"
TRANSFER_TRAIN_HISTORY = "results/{preset}/transfer/models/{tmodel}.history.csv"
TRANSFER_STATS = "results/{preset}/transfer/model_stats.csv"
TRANSFER_CROSS_MODEL = "results/{preset}/transfer/cross_model.csv"
TRANSFER_CROSS_TRAINING = "results/{preset}/transfer/cross_training.csv"
TRANSFER_METRICS = "metrics/{preset}/transfer.json"

# Szegedy et al. §3: units of a hidden layer vs random directions.
UNITS_TOP = "results/{preset}/units/top.csv"
UNITS_METRICS = "metrics/{preset}/units.json"

# Attack suite (issue 4). Kurakin et al.: fast / basic iterative / least-likely class across eps.
KURAKIN_TABLE = "results/{preset}/kurakin/{model}.csv"
KURAKIN_METRICS = "metrics/{preset}/kurakin/{model}.json"

# Athalye et al.: the obfuscated-gradient defenses, naive vs adaptive attacks.
THERMO_MODEL = "results/{preset}/obfuscated/thermometer.pt"
THERMO_METRICS = "results/{preset}/obfuscated/thermometer.json"
THERMO_HISTORY = "results/{preset}/obfuscated/thermometer.history.csv"
OBFUSCATED_TABLE = "results/{preset}/obfuscated/table.csv"
OBFUSCATED_METRICS = "metrics/{preset}/obfuscated.json"

# Papernot et al. 2017: the black-box substitute and the transfer of its adversarial examples.
SUBSTITUTE_ROUNDS = "results/{preset}/substitute/rounds.csv"
SUBSTITUTE_SWEEP = "results/{preset}/substitute/fgsm_sweep.csv"
SUBSTITUTE_METRICS = "metrics/{preset}/substitute.json"

# Carlini & Wagner 2017: the 10 x 10 grids and Table IV, per model.
CW_GRIDS = "results/{preset}/cw_study/{model}/grids.pt"
CW_TABLE = "results/{preset}/cw_study/{model}/targets.csv"
CW_METRICS = "metrics/{preset}/cw_study/{model}.json"
CW_TIMING = "results/{preset}/cw_study/{model}/timing.json"

# Su et al. 2019: the one-pixel attack's success table, per model.
ONEPIXEL_TABLE = "results/{preset}/onepixel_study/{model}.csv"
ONEPIXEL_METRICS = "metrics/{preset}/onepixel_study/{model}.json"

# Kurakin et al. 2016 §3-4: destruction rates under the print-and-photo simulation, per model.
PHYSICAL_TABLE = "results/{preset}/physical/{model}/destruction.csv"
PHYSICAL_ABLATION = "results/{preset}/physical/{model}/ablation.csv"
PHYSICAL_TRACE = "results/{preset}/physical/{model}/trace.pt"
PHYSICAL_METRICS = "metrics/{preset}/physical/{model}.json"
# wall times stay out of the metrics JSON, which is bit-identical across runs on CPU
PHYSICAL_TIMING = "results/{preset}/physical/{model}/timing.json"

# Papernot et al. 2016: JSMA success, hardness and adversarial distance, per model.
JSMA_TABLE = "results/{preset}/jsma_study/{model}.csv"
JSMA_METRICS = "metrics/{preset}/jsma_study/{model}.json"
JSMA_TIMING = "results/{preset}/jsma_study/{model}.timing.json"

# Moosavi-Dezfooli et al. 2017: universal perturbations, their baselines and spectra, per model ...
UAP_PERTURBATIONS = "results/{preset}/uap/{model}/perturbations.pt"
UAP_TABLE = "results/{preset}/uap/{model}/fooling.csv"
UAP_CURVE = "results/{preset}/uap/{model}/curve.csv"
UAP_LABELS = "results/{preset}/uap/{model}/labels.csv"
UAP_SPECTRUM = "results/{preset}/uap/{model}/spectrum.csv"
UAP_METRICS = "metrics/{preset}/uap/{model}.json"
UAP_TIMING = "results/{preset}/uap/{model}/timing.json"
# ... and across models: the cross-model matrix, fine-tuning on UAPs, gradients along PGD trajectories.
UAP_CROSS = "results/{preset}/uap_study/cross_model.csv"
UAP_FINETUNE = "results/{preset}/uap_study/finetune.csv"
UAP_TRAJECTORY = "results/{preset}/uap_study/trajectories.csv"
UAP_STUDY_METRICS = "metrics/{preset}/uap_study.json"
UAP_STUDY_TIMING = "results/{preset}/uap_study/timing.json"

# PixelDefend (Song et al.) and Defense-GAN (Samangouei et al.): the generative models, and both
# defenses under no attack, naive PGD and BPDA / EoT PGD.
PIXELCNN_MODEL = "results/{preset}/generative/pixelcnn.pt"
PIXELCNN_HISTORY = "results/{preset}/generative/pixelcnn.history.csv"
PIXELCNN_METRICS = "metrics/{preset}/generative/pixelcnn.json"
GAN_MODEL = "results/{preset}/generative/gan.pt"
GAN_HISTORY = "results/{preset}/generative/gan.history.csv"
GAN_METRICS = "metrics/{preset}/generative/gan.json"
GENERATIVE_TABLE = "results/{preset}/generative/table.csv"
GENERATIVE_EXAMPLES = "results/{preset}/generative/examples.pt"
GENERATIVE_METRICS = "metrics/{preset}/generative/defenses.json"

# Resume points of fits killed mid-training (ADVLAB_RESUME=1 continues them): scratch, no stage's
# output, removed when the fit finishes; in .gitignore and .dvcignore.
RESUME_DIR = "checkpoints/{preset}/{stage}/{model}"

REPORT = "reports/report.md"
FIGURES = "reports/figures"


def path(pattern: str, **wildcards) -> Path:
    """Absolute path of an artifact (stages run from the repo root, but be explicit)."""
    return ROOT / pattern.format(**wildcards)
