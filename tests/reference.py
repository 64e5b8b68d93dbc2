"""Where the tests find the published results they reproduce (copied into the repository).

The files and their origin are described in tests/data/reference/README.md.
"""

from __future__ import annotations

from pathlib import Path

REFERENCE_DATA = Path(__file__).resolve().parent / "data" / "reference"
WILDVISION_BENCH = REFERENCE_DATA / "wildvision_bench"
WILDVISION_ARENA = REFERENCE_DATA / "wildvision_arena"
ARENA_HARD_NOTEBOOK = REFERENCE_DATA / "arena_hard_notebook"
