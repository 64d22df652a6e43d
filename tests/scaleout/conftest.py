"""Scale-out tests (SLURM, several GPUs or processes, DVC remotes, MLflow server): `pytest -m scaleout`."""
from __future__ import annotations

from pathlib import Path

import pytest

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(config, items):
    for item in items:
        if _HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.scaleout)
