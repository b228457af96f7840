"""The code explains itself: no docstring or comment sends its reader to a file the repository does
not hold (the development tree's contract, Folsom reference and oslo notes)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import dbworker

PACKAGE = Path(dbworker.__file__).parent
#: "contract §4", "reference §3.1", "oslo-notes §2.9", a bare "§9.14", "STYLE.md": documents
#: outside the repository; the README and the code's own docstrings say the rule instead.
OUTSIDE = re.compile(r"§|\b(contract|reference|oslo-notes)\s+§|STYLE\.md|spec/")


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_reference_to_files_outside_the_repository(path):
    found = [
        f"{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert found == []
