"""Select a preset for DVC: merge presets/<name>.yaml over params.yaml and write params.yaml.

    python -m pipeline.preset smoke && dvc repro

Snakemake needs no rewrite: `snakemake --configfile presets/<name>.yaml` merges the same way.
"""
from __future__ import annotations

import argparse
import io
import sys

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedSeq

from pipeline.config import ROOT, ParamsError, deep_merge, preset_path, read_yaml, validate
from pipeline.io import atomic_write_text


def _overlay(doc, over: dict) -> None:
    """Set the preset's keys inside the round-trip document, so params.yaml keeps its comments."""
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            _overlay(doc[key], value)
        elif isinstance(value, list):
            seq = CommentedSeq(value)
            seq.fa.set_flow_style()  # lists stay on one line, as written in params.yaml
            doc[key] = seq
        else:
            doc[key] = value


def _represent_float(rep, value: float):
    """Floats that PyYAML (YAML 1.1, what DVC and the stages read) parses back as floats:
    it needs a dot in the mantissa, so 1e-05 is written 1.0e-05."""
    if value != value:
        text = ".nan"
    elif value in (float("inf"), float("-inf")):
        text = ".inf" if value > 0 else "-.inf"
    else:
        text = repr(value)
        mantissa, e, exponent = text.partition("e")
        if e and "." not in mantissa:
            text = f"{mantissa}.0e{exponent}"
    return rep.represent_scalar("tag:yaml.org,2002:float", text)


def read_yaml_text(text: str):
    import yaml as pyyaml

    return pyyaml.safe_load(text)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", help="preset name: a file presets/<name>.yaml")
    parser.add_argument("--params", default=str(ROOT / "params.yaml"), help="params file to rewrite")
    args = parser.parse_args(argv)
    try:
        merged = deep_merge(read_yaml(args.params), read_yaml(preset_path(args.name)))
        validate(merged, source=f"{args.params} + presets/{args.name}.yaml")
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    yaml.representer.add_representer(float, _represent_float)
    with open(args.params) as fh:
        doc = yaml.load(fh)
    _overlay(doc, read_yaml(preset_path(args.name)))
    out = io.StringIO()
    yaml.dump(doc, out)
    if read_yaml_text(out.getvalue()) != merged:  # the round trip must mean exactly the merge
        raise RuntimeError("internal error: preset overlay differs from the validated merge")
    atomic_write_text(args.params, out.getvalue())
    print(f"params.yaml now holds preset {args.name!r}; run `dvc repro`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
