"""Report sections. Each module has `render(ctx) -> str | None`: it returns markdown when the
artifacts it needs exist and None otherwise, so a later study adds a section (a module listed in
SECTIONS) without touching the others."""
from __future__ import annotations

from pipeline.report_sections import (cw, deepfool_table, defenses, figures, generative, jsma, kurakin, madry_table, obfuscated,
                                      onepixel, overview, physical, reproducibility, robustness, substitute, training,
                                      transfer, uap, units)

SECTIONS = [overview, training, robustness, defenses, madry_table, deepfool_table, transfer, units, kurakin, jsma, cw,
            onepixel, substitute, obfuscated, generative, physical, uap, reproducibility, figures]
