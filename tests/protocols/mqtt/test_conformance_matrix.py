"""The conformance matrix (docs/mqtt.md, section "Conformance matrix") stays true:
every test it cites exists (and every parametrized case it names), every row has a
known status, and the totals it gives are the totals of its rows."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DOC = ROOT / "docs" / "mqtt.md"
ROW = re.compile(r"^\| \[MQTT-([\d.]+-\d+)\] \| [^|]+ \| (tested|n/a|gap) \| (.*) \|$")
CITED = re.compile(r"`((?:tests/[\w/]+/)?test_\w+\.py)::(\w+)(?:\[([^\]]+)\])?`")
TOTAL = re.compile(r"^\| (5\.0|3\.1\.1) \| (\d+) \| (\d+) \| (\d+) \| (\d+) \|$")


def rows() -> dict[str, list[tuple[str, str, str]]]:
    """(statement, status, last column) per version, in page order."""
    found: dict[str, list[tuple[str, str, str]]] = {"5.0": [], "3.1.1": []}
    version = None
    for line in DOC.read_text().splitlines():
        if line.startswith("### MQTT "):
            version = line.removeprefix("### MQTT ").strip()
        elif (match := ROW.match(line)) is not None:
            assert version in found, f"a row outside a version section: {line}"
            found[version].append(match.groups())  # type: ignore[arg-type]
    return found


def test_every_cited_test_exists() -> None:
    cited = 0
    for version_rows in rows().values():
        for statement, status, last in version_rows:
            refs = CITED.findall(last)
            if status == "tested":
                assert refs, f"[MQTT-{statement}] is tested but cites no test"
            for path, name, case in refs:
                file = ROOT / path if path.startswith("tests/") else Path(__file__).parent / path
                assert file.exists(), f"[MQTT-{statement}]: no {path}"
                text = file.read_text()
                assert re.search(rf"def {name}\(", text), f"[MQTT-{statement}]: no {path}::{name}"
                if case is not None:
                    assert f'"{case}"' in text, f"[MQTT-{statement}]: no case {case} in {path}"
                cited += 1
    assert cited > 300


def test_each_statement_once_and_the_totals_are_the_rows() -> None:
    found = rows()
    totals = {}
    for line in DOC.read_text().splitlines():
        if (match := TOTAL.match(line)) is not None:
            version, *numbers = match.groups()
            totals[version] = tuple(int(n) for n in numbers)
    for version, version_rows in found.items():
        statements = [statement for statement, _, _ in version_rows]
        assert len(statements) == len(set(statements)), f"{version}: a statement listed twice"
        status = Counter(s for _, s, _ in version_rows)
        assert totals[version] == (
            len(version_rows),
            status["tested"],
            status["n/a"],
            status["gap"],
        )
