"""The layering rules of docs/architecture.md, checked on the source.

Each rule names a group of modules and the packages they must not import, at
any depth: module level, inside functions, under ``TYPE_CHECKING`` (a type-only
import is still a dependency). The rules:

* storage knows nothing above it (engine, protocols, APIs, security, the server);
* the engine knows no adapter (protocols, APIs, the listeners, the server, the CLI);
* the MQTT codec does no I/O: no trio, no sockets;
* security sits below the APIs and protocols that use it;
* nothing in tidelog imports ``tidelog.testing``, ``tests`` or ``bench``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "tidelog"

CODEC = [
    f"tidelog.protocols.mqtt.{name}"
    for name in (
        "protocol",
        "reason_codes",
        "properties",
        "packets",
        "wire",
        "decoder",
        "encoder",
        "replies",
        "errors",
    )
]
"""The sans-IO MQTT codec (tidelog/protocols/mqtt/__init__.py lists it)."""


PRODUCT = (
    "tidelog",
    *(
        f"tidelog.{path.name}." if path.is_dir() else f"tidelog.{path.stem}"
        for path in sorted(PACKAGE.iterdir())
        if path.name != "testing"
        and ((path / "__init__.py").exists() or (path.suffix == ".py" and path.stem != "__init__"))
    ),
)
"""Every module of tidelog but the harnesses of ``tidelog.testing``."""


@attrs.frozen
class Rule:
    name: str
    modules: tuple[str, ...]
    """Module names, or package prefixes ending in ``.``."""
    forbidden: tuple[str, ...]
    """Imported names that break the rule: a package and everything below it."""


RULES = [
    Rule(
        "storage imports nothing from the layers above it",
        ("tidelog.storage.",),
        (
            "tidelog.engine",
            "tidelog.protocols",
            "tidelog.api",
            "tidelog.security",
            "tidelog.server",
            "tidelog.websocket_listener",
            "tidelog.cli",
        ),
    ),
    Rule(
        "the engine imports no adapter",
        ("tidelog.engine.",),
        (
            "tidelog.protocols",
            "tidelog.api",
            "tidelog.server",
            "tidelog.websocket_listener",
            "tidelog.cli",
        ),
    ),
    Rule(
        "the MQTT codec does no I/O",
        tuple(CODEC),
        ("trio", "trio_websocket", "socket", "ssl", "asyncio", "tidelog.engine"),
    ),
    Rule(
        "nothing in tidelog imports the test and benchmark harnesses",
        PRODUCT,
        ("tidelog.testing", "tests", "bench"),
    ),
    Rule(
        "security sits below the APIs and protocols",
        ("tidelog.security.",),
        ("tidelog.api", "tidelog.protocols", "tidelog.server", "tidelog.websocket_listener"),
    ),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts[-1:] = []
    return ".".join(parts)


def imports(source: str, module: str) -> set[str]:
    """Every module name ``source`` imports, relative imports made absolute."""
    found: set[str] = set()
    package = module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def breaks(rule: Rule, module: str, imported: set[str]) -> list[str]:
    """The imports of ``module`` that break ``rule`` (none if the rule is not about it)."""
    applies = any(
        module.startswith(m) or module == m.rstrip(".") if m.endswith(".") else module == m
        for m in rule.modules
    )
    if not applies:
        return []
    return sorted(
        name
        for name in imported
        if any(name == bad or name.startswith(bad + ".") for bad in rule.forbidden)
    )


def sources() -> list[tuple[str, str]]:
    return [(module_name(path), path.read_text("utf-8")) for path in sorted(PACKAGE.rglob("*.py"))]


@pytest.mark.parametrize("rule", RULES, ids=lambda rule: rule.name)
def test_layering_rule_holds(rule: Rule) -> None:
    violations = {
        module: bad
        for module, source in sources()
        if (bad := breaks(rule, module, imports(source, module)))
    }
    assert violations == {}, f"{rule.name}: {violations}"


def test_every_rule_applies_to_existing_modules() -> None:
    """A renamed package must not leave a rule checking nothing."""
    names = [module for module, _ in sources()]
    for rule in RULES:
        assert any(
            any(m.startswith(p) if p.endswith(".") else m == p for p in rule.modules) for m in names
        ), rule.name


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("tidelog.storage.lmdb_log", "from tidelog.engine.broker import Broker"),
        ("tidelog.storage.memory", "def f():\n    import tidelog.api.rest\n"),
        ("tidelog.engine.broker", "from tidelog.protocols.mqtt import server"),
        ("tidelog.engine.cursors", "from ..api import rest"),
        ("tidelog.protocols.mqtt.decoder", "import trio"),
        ("tidelog.protocols.mqtt.encoder", "from trio import lowlevel"),
        ("tidelog.server", "from tidelog.testing.server import HOST"),
        ("tidelog.api.routes.events", "import bench.mqtt_load"),
        (
            "tidelog.security.http",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from tidelog.api.shapes import dumps\n",
        ),
    ],
)
def test_a_violation_is_caught(module: str, source: str) -> None:
    """The checker itself: each of these imports breaks a rule."""
    assert any(breaks(rule, module, imports(source, module)) for rule in RULES)


def test_allowed_imports_pass() -> None:
    assert not any(
        breaks(rule, "tidelog.engine.broker", imports("from tidelog.storage import Event", "x"))
        for rule in RULES
    )
    assert not any(
        breaks(rule, "tidelog.api.rest", imports("import trio\nimport tidelog.engine", "x"))
        for rule in RULES
    )
