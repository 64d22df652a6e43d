"""What every section may read: params, paths of this preset, and small loaders."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from pipeline import paths
from pipeline.io import read_json

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")


@dataclass
class Context:
    params: dict
    figures_dir: Path           # where sections write PNGs (renamed into reports/figures)
    figures_link: str = "figures"  # how report.md refers to that folder
    written: list = field(default_factory=list)

    @property
    def preset(self) -> str:
        return self.params["preset"]

    @property
    def trained(self) -> list[str]:
        """Every trained model id: natural architectures, then <arch>-<defense> variants."""
        p = self.params
        return list(p["models"]) + [f"{a}-{d}" for d, cfg in p["defenses"].items() for a in cfg["models"]]

    def path(self, pattern: str, **wildcards) -> Path:
        return paths.path(pattern, preset=self.preset, **wildcards)

    def json(self, pattern: str, **wildcards) -> dict | None:
        p = self.path(pattern, **wildcards)
        return read_json(p) if p.exists() else None

    def csv(self, pattern: str, **wildcards) -> pd.DataFrame | None:
        p = self.path(pattern, **wildcards)
        return pd.read_csv(p) if p.exists() else None

    def paper(self) -> dict:
        with open(PAPER_NUMBERS) as fh:
            return yaml.safe_load(fh)

    def figure(self, fig, name: str, alt: str) -> str:
        target = self.figures_dir / f"{name}.png"
        fig.savefig(target, dpi=110, bbox_inches="tight", metadata={"Software": None})
        self.written.append(target)
        return f"![{alt}]({self.figures_link}/{name}.png)"


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-2 or abs(value) >= 1e4):
            return f"{value:.{digits - 1}e}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{digits + 1}g}"
    return str(value)


def table(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False)
