"""The README's embedded-use example runs as printed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_embedded_example_runs(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Embedded use", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "the README lost its embedded example"
    result = subprocess.run(
        [sys.executable, "-c", code.group(1)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    assert "durable at offset 0" in result.stdout
    assert "devices/42/temperature b'21.5'" in result.stdout
    assert "cursor at 1, 0 behind" in result.stdout
    assert (tmp_path / "tidelog-data").is_dir()


def test_readme_lists_every_doc() -> None:
    """Each file in docs/ is named in the README's Documentation list, and each one named
    there exists."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Documentation", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(docs/[\w.-]+\.md)`", section))
    present = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert listed == present
