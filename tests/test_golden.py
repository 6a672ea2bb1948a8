"""Golden files: the ladder and the table of every built-in scenario, as a person reads them.

Refresh them after an intended change with ``make golden`` (``RAWFIN_UPDATE_GOLDEN=1``)
and read the diff before committing it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from rawfin.sim import scenarios
from rawfin.commands.scenario import render

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = os.environ.get("RAWFIN_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("fmt", ["ladder", "table"])
@pytest.mark.parametrize("name", scenarios.names())
def test_golden(name, fmt):
    scn = scenarios.builtin(name)
    buf = io.StringIO()
    render(scn, scenarios.run(scn), fmt, buf)
    got = buf.getvalue()
    path = GOLDEN / f"{name}.{fmt}.txt"
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(got, encoding="utf-8")
        return
    assert path.exists(), f"{path.name} missing: run `make golden`"
    want = path.read_text(encoding="utf-8")
    assert got == want, f"{path.name} differs: if the change is intended, run `make golden` and read the diff"
