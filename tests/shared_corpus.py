"""Where the tests find the real public captures (one place for every test module).

``$RAWFIN_CORPUS`` names the corpus (a directory holding ``captures/`` and ``MANIFEST.tsv``,
or a directory of captures itself); without it, ``../shared/corpus`` beside the repository.
When there is none, the tests that need it skip, saying so (:data:`needs_corpus`).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _root() -> Path:
    env = os.environ.get("RAWFIN_CORPUS")
    return Path(env) if env else REPO.parent / "shared" / "corpus"


ROOT = _root()
#: the directory of capture files (``ROOT/captures``, or ``ROOT`` when it holds the captures itself)
CAPTURES = ROOT / "captures" if (ROOT / "captures").is_dir() else ROOT
#: every capture file, sorted by name (empty when there is no corpus)
FILES: list[Path] = sorted(p for p in CAPTURES.iterdir() if p.is_file() and p.name != "MANIFEST.tsv") \
    if CAPTURES.is_dir() else []
PRESENT = bool(FILES)
WHY_MISSING = f"no capture corpus at {ROOT} (set RAWFIN_CORPUS, or put shared/corpus beside the repository)"
needs_corpus = pytest.mark.skipif(not PRESENT, reason=WHY_MISSING)


def capture(name: str) -> Path:
    """The corpus file called ``name``."""
    return CAPTURES / name


def manifest() -> dict[str, str]:
    """File name -> what_it_contains, from MANIFEST.tsv (empty without one)."""
    path = ROOT / "MANIFEST.tsv"
    if not path.exists():
        return {}
    with path.open(newline="") as f:
        return {Path(row["file"]).name: row["what_it_contains"] for row in csv.DictReader(f, delimiter="\t")}
