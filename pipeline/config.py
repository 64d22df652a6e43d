"""Load and validate params: the one JSON schema shared by the Snakefile and every stage.

Stages read the params file named by $ADVLAB_PARAMS (the Snakefile writes the config it was
given, presets and --config overrides included, and points there) or else `params.yaml`
(what `dvc repro` uses).
"""
from __future__ import annotations

import copy
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
            return yaml.safe_load(fh)
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
