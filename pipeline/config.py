"""Load and validate params: the one JSON schema shared by the Snakefile and every stage.

Stages read the params file named by $ADVLAB_PARAMS (the Snakefile writes the config it was
given, presets and --config overrides included, and points there) or else `params.yaml`
(what `dvc repro` uses).
"""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "pipeline" / "schemas" / "params.schema.yaml"
PRESETS_DIR = ROOT / "presets"
PARAMS_ENV = "ADVLAB_PARAMS"


class ParamsError(ValueError):
    """A params file that does not fit the schema; the message names each key at fault."""


def _schema() -> dict:
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _key(path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def _describe(err) -> str:
    where = _key(err.absolute_path)
    if err.validator == "additionalProperties":
        allowed = sorted(err.schema.get("properties", {}))
        extra = sorted(set(err.instance) - set(allowed))
        keys = ", ".join(f"{where}.{k}" if err.absolute_path else k for k in extra)
        return f"unknown key {keys} (allowed here: {', '.join(allowed)})"
    if err.validator == "required":
        return f"{where}: {err.message}"
    if err.validator == "enum":
        allowed = ", ".join(map(str, err.validator_value))
        return f"{where}: {err.instance!r} is not allowed (expected one of: {allowed})"
    if err.validator == "oneOf" and err.context:
        hints = "; ".join(sorted({c.message for c in err.context}))
        return f"{where}: {err.instance!r} is not valid ({hints})"
    return f"{where}: {err.message}"


def validate(params: dict, source: str = "params.yaml") -> dict:
    """Raise ParamsError naming every offending key; return params unchanged when valid."""
    import jsonschema

    if not isinstance(params, dict):
        raise ParamsError(f"{source}: expected a mapping of sections, got {type(params).__name__}")
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(params), key=lambda e: (list(map(str, e.absolute_path)), e.message))
    problems = [_describe(e) for e in errors]
    problems += _cross_checks(params) if not problems else []
    if problems:
        lines = "\n".join(f"  - {p}" for p in dict.fromkeys(problems))
        raise ParamsError(f"{source} is invalid:\n{lines}")
    return params


# Lists of models (natural or defended) that a study attacks: each must be trained by some stage.
TRAINED_LISTS = ("kurakin.models", "cw_study.models", "onepixel_study.models", "jsma_study.models", "physical.models",
                 "uap.models")


def _cross_checks(params: dict) -> list[str]:
    """Rules that span keys, which JSON schema states poorly."""
    problems = []
    defined = params["attacks"]
    for i, name in enumerate(params["eval"]["attacks"]):
        if name not in defined:
            problems.append(
                f"eval.attacks[{i}]: unknown attack {name!r} (defined under `attacks`: {', '.join(sorted(defined))})"
            )
    trained = set(params["models"]) | {
        f"{arch}-{defense}" for defense, cfg in params["defenses"].items() for arch in cfg["models"]
    }
    for i, name in enumerate(params["eval"]["models"]):
        if name not in trained:
            problems.append(
                f"eval.models[{i}]: no stage trains {name!r} (trained: {', '.join(sorted(trained))}); "
                "add the architecture to `models` or to `defenses.<defense>.models`"
            )
    naturals = set(params["models"])
    mt = params["madry_table"]
    if mt["model"] not in trained:
        problems.append(f"madry_table.model: no stage trains {mt['model']!r} (trained: {', '.join(sorted(trained))})")
    for key in ("other", "natural"):
        if mt[key] not in naturals:
            problems.append(f"madry_table.{key}: {mt[key]!r} is not among `models` ({', '.join(params['models'])})")
    study = params["deepfool_study"]
    for key, names in (("deepfool_study.models", study["models"]),
                       ("deepfool_study.finetune.alpha_models", study["finetune"]["alpha_models"])):
        for i, name in enumerate(names):
            if name not in naturals:
                problems.append(f"{key}[{i}]: {name!r} is not among `models` ({', '.join(params['models'])})")
    for i, name in enumerate(study["finetune"]["alpha_models"]):
        if name not in study["models"]:
            problems.append(f"deepfool_study.finetune.alpha_models[{i}]: {name!r} is not in deepfool_study.models")
    tr = params["transfer"]
    names = [m["name"] for m in tr["models"]]
    for i, name in enumerate(names):
        if name in names[:i]:
            problems.append(f"transfer.models[{i}].name: {name!r} is defined twice")
    for key in ("cross_model", "cross_training"):
        for i, name in enumerate(tr[key]):
            if name not in names:
                problems.append(f"transfer.{key}[{i}]: {name!r} is not defined under transfer.models "
                                f"({', '.join(names)})")
    for i, spec in enumerate(tr["models"]):
        if "pretrain_epochs" in spec and spec["arch"] != "ae400_10":
            problems.append(f"transfer.models[{i}].pretrain_epochs: only the ae400_10 architecture is pretrained")
    if params["units"]["model"] not in naturals:
        problems.append(f"units.model: {params['units']['model']!r} is not among `models` ({', '.join(params['models'])})")
    phys = params["physical"]
    for i, eps in enumerate(phys["ablation"]["eps"]):
        if not any(abs(eps - e) < 1e-12 for e in phys["eps"]):
            problems.append(f"physical.ablation.eps[{i}]: {eps} is not among physical.eps {phys['eps']}")
    order = phys["print_photo"].get("order")
    if order is not None:
        missing = [k for k in phys["print_photo"] if k != "order" and k not in order]
        if missing:
            problems.append(f"physical.print_photo: steps {missing} are configured but not in physical.print_photo.order")
    for key in TRAINED_LISTS:
        section, _, field = key.partition(".")
        for i, name in enumerate(params[section][field]):
            if name not in trained:
                problems.append(f"{key}[{i}]: no stage trains {name!r} (trained: {', '.join(sorted(trained))})")
    study = params["uap_study"]
    uap_models = params["uap"]["models"]
    # every model of the study is one of uap.models: the study reads their UAPs, and DVC tracks their
    # checkpoints through the uap stage's outputs
    for key, names in (("uap_study.cross", study["cross"]), ("uap_study.natural", [study["natural"]]),
                       ("uap_study.robust", [study["robust"]]), ("uap_study.finetune.model", [study["finetune"]["model"]])):
        for i, name in enumerate(names):
            if name not in uap_models:
                where = f"{key}[{i}]" if key == "uap_study.cross" else key
                problems.append(f"{where}: {name!r} is not among uap.models ({', '.join(uap_models)})")
    if study["finetune"]["model"] not in naturals:
        problems.append(f"uap_study.finetune.model: {study['finetune']['model']!r} is not among `models` "
                        f"({', '.join(params['models'])})")
    if study["finetune"]["norm"] not in params["uap"]["norms"]:
        problems.append(f"uap_study.finetune.norm: {study['finetune']['norm']!r} has no xi under uap.norms "
                        f"({', '.join(params['uap']['norms'])})")
    for i, name in enumerate(params["cw_study"]["grid"]):
        if name not in params["cw_study"]["models"]:
            problems.append(f"cw_study.grid[{i}]: {name!r} is not in cw_study.models")
    gen = params["generative"]
    if gen["run"]:
        if gen["model"] not in naturals:
            problems.append(f"generative.model: {gen['model']!r} is not among `models` ({', '.join(params['models'])}): "
                            "the defenses sit in front of a naturally trained classifier")
        if gen["pixelcnn"]["kernel"] % 2 == 0:
            problems.append(f"generative.pixelcnn.kernel: must be odd, got {gen['pixelcnn']['kernel']}")
        if params["data"]["dataset"] == "cifar10" and gen["pixelcnn"]["channels"] % 3:
            problems.append(f"generative.pixelcnn.channels: must be a multiple of 3 for CIFAR-10's RGB images (one "
                            f"group of channels per colour), got {gen['pixelcnn']['channels']}")
    data = params["data"]
    if data["dataset"] == "npz" and not data["npz_path"]:
        problems.append("data.npz_path: required when data.dataset is 'npz'")
    if data["dataset"] == "mnist5k":
        n_train, n_test = data["n_train"] or 0, data["n_test"] or 0
        if n_train + n_test > 5000:
            problems.append(
                f"data.n_train + data.n_test: {n_train} + {n_test} exceeds the 5000 images of mnist5k"
            )
    return problems


def read_yaml(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"params file not found: {path}")
    try:
        with open(path) as fh:
            if path.suffix == ".json":  # Snakemake's resolved config: PyYAML would read 1e-05 as a string
                return json.load(fh)
            return yaml.safe_load(fh)
    except json.JSONDecodeError as exc:
        raise ParamsError(f"{path}: not valid JSON: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc


def params_path() -> Path:
    env = os.environ.get(PARAMS_ENV)
    return Path(env) if env else ROOT / "params.yaml"


def load_params(path: str | os.PathLike | None = None) -> dict:
    """The validated params every stage works from."""
    path = Path(path) if path else params_path()
    return validate(read_yaml(path), source=str(path))


def preset_path(name: str) -> Path:
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PRESETS_DIR.glob("*.yaml")))
        raise ParamsError(f"unknown preset {name!r} (available: {known})")
    return path


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out
