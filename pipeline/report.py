"""Stage report: reports/report.md and reports/figures/*.png from whatever stages exist."""
from __future__ import annotations

import os
import sys

import matplotlib

matplotlib.use("Agg")

from pipeline import paths  # noqa: E402
from pipeline.io import atomic_dir, atomic_write_text  # noqa: E402
from pipeline.report_sections import SECTIONS  # noqa: E402
from pipeline.report_sections.context import Context  # noqa: E402
from pipeline.stage import run_stage  # noqa: E402


def main(params: dict, args) -> dict:
    report_path = paths.path(paths.REPORT)
    figures_path = paths.path(paths.FIGURES)
    with atomic_dir(figures_path) as tmp_figures:
        ctx = Context(params=params, figures_dir=tmp_figures,
                      figures_link=os.path.relpath(figures_path, report_path.parent))
        parts = [text for section in SECTIONS if (text := section.render(ctx))]
        atomic_write_text(report_path, "\n\n".join(parts) + "\n")
    return {
        "params": {"preset": params["preset"], "report": params["report"]},
        "metrics": {"sections": len(parts), "figures": len(ctx.written)},
        "artifacts": [report_path, figures_path],
    }


if __name__ == "__main__":
    sys.exit(run_stage("report", main, gpus=0))
