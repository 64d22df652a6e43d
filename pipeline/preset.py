"""Select a preset for DVC: merge presets/<name>.yaml over params.yaml and write params.yaml.

    python -m pipeline.preset smoke && dvc repro

Snakemake needs no rewrite: `snakemake --configfile presets/<name>.yaml` merges the same way.
"""
from __future__ import annotations

import argparse
import sys

import yaml

from pipeline.config import ROOT, ParamsError, deep_merge, preset_path, read_yaml, validate
from pipeline.io import atomic_write_text


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
    header = (
        f"# advlab parameters (preset {args.name}, written by `python -m pipeline.preset {args.name}`).\n"
        "# The one source of truth for Snakemake and DVC; see presets/ and README.md.\n"
    )
    atomic_write_text(args.params, header + yaml.safe_dump(merged, sort_keys=False))
    print(f"params.yaml now holds preset {args.name!r}; run `dvc repro`")
    return 0


if __name__ == "__main__":
    sys.exit(main())
