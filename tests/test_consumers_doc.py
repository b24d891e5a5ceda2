"""docs/consumers.md's Python example runs as printed and prints what it says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_consumers_doc_example_runs(tmp_path: Path) -> None:
    doc = (ROOT / "docs" / "consumers.md").read_text()
    code = re.search(r"## Python\n\n```python\n(.*?)```", doc, re.S)
    assert code is not None, "docs/consumers.md lost its Python example"
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:2] == ["3 1", "0 0"]
