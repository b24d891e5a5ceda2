"""Configuration of ``tidelog serve``: one table of options, three sources, provenance.

Every option lives in a section (``[mqtt]``, ``[storage]``, ...) and is declared
once, here, with its kind (how values are parsed and checked), default and
documentation. Values come from, in increasing precedence:

1. the default;
2. the TOML file given with ``--config`` (or ``TIDELOG_CONFIG``);
3. environment variables ``TIDELOG_<SECTION>_<NAME>`` (plus a few short aliases
   such as ``TIDELOG_STORAGE``);
4. command-line flags (the named flags of ``tidelog serve`` and
   ``--set section.name=value``).

:func:`load` returns :class:`Settings`, which remembers where each value came
from (``tidelog config show`` prints it). Errors are :class:`ConfigError`, one
line naming the key and the file, variable or flag that set it.

Adding a section is a few lines: call :func:`section`, then :func:`option` per
field. The values reach the server as ``ServerConfig.sections[name]``.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from tidelog.errors import TidelogError

ENV_PREFIX = "TIDELOG_"
CONFIG_ENV = "TIDELOG_CONFIG"


class ConfigError(TidelogError, ValueError):
    """An unknown key or a bad value; the message names the key and its source."""


Kind = Callable[[Any], Any]
"""Parses a value from TOML (any type) or the environment/flags (a string); raises ValueError."""


@attrs.frozen
class Option:
    section: str
    name: str
    kind: Kind
    default: Any
    doc: str
    flag: str | None = None
    """The named ``tidelog serve`` flag setting it, if any."""
    env_aliases: tuple[str, ...] = ()
    effective: Callable[[Settings], str] | None = None
    """What the value means once resolved (``auto`` settings), shown by ``config show``."""

    @property
    def key(self) -> str:
        return f"{self.section}.{self.name}"

    @property
    def env(self) -> str:
        return f"{ENV_PREFIX}{self.section}_{self.name}".upper()


@attrs.frozen
class TableArray:
    """An array of tables (``[[link]]``): from the TOML file only, never the
    environment or flags; ``parse(tables, where)`` returns the parsed entries and
    ``show(entry)`` a dict for ``config show``."""

    name: str
    parse: Callable[[Any, str], tuple[Any, ...]]
    show: Callable[[Any], dict[str, Any]]
    doc: str


TABLE_ARRAYS: dict[str, TableArray] = {}
"""``[[name]]`` -> how to parse and show it."""


def table_array(
    name: str,
    parse: Callable[[Any, str], tuple[Any, ...]],
    show: Callable[[Any], dict[str, Any]],
    doc: str,
) -> None:
    TABLE_ARRAYS[name] = TableArray(name, parse, show, doc)


SECTIONS: dict[str, str] = {}
"""Section name -> one-line description (in declaration order)."""
OPTIONS: dict[str, Option] = {}
"""``section.name`` -> option (in declaration order)."""


def section(name: str, doc: str) -> None:
    SECTIONS[name] = doc


def option(
    section_name: str,
    name: str,
    kind: Kind,
    default: Any,
    doc: str,
    *,
    flag: str | None = None,
    env_aliases: Iterable[str] = (),
    effective: Callable[[Settings], str] | None = None,
) -> Option:
    if section_name not in SECTIONS:
        raise ValueError(f"declare section {section_name!r} first")
    declared = Option(section_name, name, kind, default, doc, flag, tuple(env_aliases), effective)
    OPTIONS[declared.key] = declared
    return declared


# -- kinds -------------------------------------------------------------------------------

_OFF = ("off", "none", "false", "no", "")


def _is_off(value: Any) -> bool:
    return value is None or value is False or (isinstance(value, str) and value.lower() in _OFF)


def integer(minimum: int | None = None, maximum: int | None = None) -> Kind:
    """Whole numbers within ``[minimum, maximum]`` (the parser keeps both as attributes,
    so tests and docs can read them)."""

    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError(f"expected an integer, got {value!r}")
        if isinstance(value, str):
            try:
                value = int(value.strip().replace("_", ""))
            except ValueError:
                raise ValueError(f"expected an integer, got {value!r}") from None
        if not isinstance(value, int):
            raise ValueError(f"expected an integer, got {value!r}")
        if minimum is not None and value < minimum:
            raise ValueError(f"{value} is below the minimum {minimum}")
        if maximum is not None and value > maximum:
            raise ValueError(f"{value} is above the maximum {maximum}")
        return value

    parse.__doc__ = "integer"
    parse.minimum = minimum  # type: ignore[attr-defined]
    parse.maximum = maximum  # type: ignore[attr-defined]
    return parse


def optional(kind: Kind) -> Kind:
    """``off`` (or ``false``, ``none``) means None."""

    def parse(value: Any) -> Any:
        return None if _is_off(value) else kind(value)

    parse.__doc__ = f"{kind.__doc__} or off"
    parse.inner = kind  # type: ignore[attr-defined]
    return parse


def port(value: Any) -> int | None:
    """port or off"""
    if _is_off(value):
        return None
    try:
        number: int = integer()(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a port number or 'off'") from None
    if not 0 <= number <= 65535:
        raise ValueError(f"port {number} is out of range")
    return number


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "t": 1000**4,
    "tb": 1000**4,
    "tib": 1024**4,
}
_DURATION_MS = {"ms": 1, "": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_NUMBER_UNIT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def _with_unit(value: Any, units: Mapping[str, int], what: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        match = _NUMBER_UNIT.match(value.replace("_", ""))
        if match and match.group(2).lower() in units:
            return int(float(match.group(1)) * units[match.group(2).lower()])
    raise ValueError(f"expected {what}, got {value!r}")


def size(value: Any) -> int:
    """bytes (e.g. 1048576, "64MiB", "1GB")"""
    number = _with_unit(value, _SIZE_UNITS, 'a size in bytes (e.g. 1048576 or "64MiB")')
    if number <= 0:
        raise ValueError(f"a size must be positive, got {value!r}")
    return number


def duration_ms(value: Any) -> int:
    """milliseconds (e.g. 500, "10s", "7d")"""
    number = _with_unit(value, _DURATION_MS, 'a duration in ms (e.g. 500, "10s" or "7d")')
    if number <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return number


def seconds(value: Any) -> float:
    """seconds (e.g. 2.5, "10s", "500ms")"""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration in seconds, got {value!r}")
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = _with_unit(value, _DURATION_MS, 'seconds (e.g. 2.5 or "10s")') / 1000
    if number <= 0:
        raise ValueError(f"a duration must be positive, got {value!r}")
    return number


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def boolean(value: Any) -> bool:
    """true or false (also yes/no, on/off, 1/0)"""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
        return True
    if isinstance(value, str) and value.strip().lower() in FALSE_WORDS:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


AUTO = "auto"


def boolean_or_auto(value: Any) -> bool | str:
    """true, false or auto"""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        return boolean(value)
    except ValueError:
        raise ValueError(f"expected true, false or auto, got {value!r}") from None


def string(value: Any) -> str:
    """text"""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected a non-empty string, got {value!r}")
    return value


def string_list(value: Any) -> list[str]:
    """list of strings (TOML array, or comma-separated)"""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return list(value)
    raise ValueError(f"expected a list of strings, got {value!r}")


def choice(*values: str) -> Kind:
    def parse(value: Any) -> str:
        if value not in values:
            raise ValueError(f"expected one of {', '.join(values)}, got {value!r}")
        return str(value)

    parse.__doc__ = "one of " + ", ".join(values)
    parse.values = values  # type: ignore[attr-defined]
    return parse


def address(value: Any) -> str:
    """IP address or host name"""
    text = string(value)
    return text


def fsync_policy(value: Any) -> str:
    """always, never or interval:<ms>"""
    from tidelog.storage.base import FsyncPolicy

    try:
        return str(FsyncPolicy.parse(string(value)))
    except TidelogError as exc:
        raise ValueError(str(exc)) from None


def storage_url(value: Any) -> str:
    """storage URL"""
    from tidelog.storage import parse_url

    text = string(value)
    try:
        parse_url(text)
    except TidelogError as exc:
        raise ValueError(str(exc)) from None
    return text


# -- loading -----------------------------------------------------------------------------


@attrs.frozen
class Value:
    value: Any
    source: str
    """``default``, ``file <path>``, ``env <VAR>`` or ``flag <--flag>``."""


@attrs.frozen
class Settings:
    """The effective configuration: every option's value and where it came from."""

    values: dict[str, Value]
    tables: dict[str, tuple[Any, ...]] = attrs.field(factory=dict)
    """``[[name]]`` arrays of tables, parsed (see :func:`table_array`)."""
    table_sources: dict[str, str] = attrs.field(factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.values[key].value

    def section(self, name: str) -> dict[str, Any]:
        prefix = name + "."
        return {k[len(prefix) :]: v.value for k, v in self.values.items() if k.startswith(prefix)}

    def sections(self) -> dict[str, dict[str, Any]]:
        return {name: self.section(name) for name in SECTIONS}


def _parse(opt: Option, raw: Any, source: str) -> Value:
    try:
        return Value(opt.kind(raw), source)
    except ValueError as exc:
        raise ConfigError(f"{source}: {opt.key}: {exc}") from None


def _env_names() -> dict[str, Option]:
    names: dict[str, Option] = {}
    for opt in OPTIONS.values():
        names[opt.env] = opt
        for alias in opt.env_aliases:
            names[alias] = opt
    return names


def read_file(path: str) -> dict[str, Any]:
    """The TOML file's tables; ConfigError if unreadable or not TOML."""
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: not valid TOML: {exc}") from None


def load(
    config_file: str | None = None,
    environ: Mapping[str, str] | None = None,
    flags: Mapping[str, tuple[Any, str]] | None = None,
) -> Settings:
    """Defaults, then the file, then the environment, then ``flags`` (``key -> (value, flag)``)."""
    environ = os.environ if environ is None else environ
    values = {key: Value(opt.default, "default") for key, opt in OPTIONS.items()}
    tables: dict[str, tuple[Any, ...]] = {name: () for name in TABLE_ARRAYS}
    table_sources: dict[str, str] = {}
    if config_file is None and environ.get(CONFIG_ENV):
        config_file = environ[CONFIG_ENV]
    if config_file is not None:
        source = f"file {config_file}"
        for name, table in read_file(config_file).items():
            if name in TABLE_ARRAYS:
                try:
                    tables[name] = TABLE_ARRAYS[name].parse(table, f"[[{name}]]")
                except ValueError as exc:
                    raise ConfigError(f"{config_file}: {exc}") from None
                table_sources[name] = source
                continue
            if name not in SECTIONS or not isinstance(table, dict):
                raise ConfigError(
                    f"{config_file}: unknown section {name!r} (sections: {', '.join(SECTIONS)})"
                )
            for key, raw in table.items():
                opt = OPTIONS.get(f"{name}.{key}")
                if opt is None:
                    known = ", ".join(o.name for o in OPTIONS.values() if o.section == name)
                    raise ConfigError(
                        f"{config_file}: unknown key {name}.{key} (known in [{name}]: {known})"
                    )
                values[opt.key] = _parse(opt, raw, f"{config_file}")
                values[opt.key] = attrs.evolve(values[opt.key], source=source)
    env_names = _env_names()
    section_prefixes = tuple(f"{ENV_PREFIX}{name}_".upper() for name in SECTIONS)
    array_prefixes = tuple(f"{ENV_PREFIX}{name}_".upper() for name in TABLE_ARRAYS)
    for var in sorted(environ):
        opt = env_names.get(var)
        if opt is None:
            if var.startswith(array_prefixes):
                table = var[len(ENV_PREFIX) :].split("_")[0].lower()
                raise ConfigError(
                    f"environment variable {var}: [[{table}]] comes from the configuration "
                    "file only"
                )
            if var.startswith(section_prefixes):
                raise ConfigError(f"environment variable {var}: no such option")
            continue
        values[opt.key] = _parse(opt, environ[var], f"environment variable {var}")
        values[opt.key] = attrs.evolve(values[opt.key], source=f"env {var}")
    for key, (raw, flag) in (flags or {}).items():
        opt = OPTIONS.get(key)
        if opt is None:
            raise ConfigError(f"{flag}: unknown option {key!r}")
        values[key] = _parse(opt, raw, flag)
        values[key] = attrs.evolve(values[key], source=f"flag {flag}")
    return Settings(values, tables, table_sources)


def parse_set(text: str) -> tuple[str, str]:
    """``section.name=value`` from ``--set``."""
    key, sep, value = text.partition("=")
    if not sep or "." not in key:
        raise ConfigError(f"--set {text!r}: expected section.name=value")
    if key.strip() not in OPTIONS:
        raise ConfigError(f"--set {text!r}: unknown option {key.strip()!r}")
    return key.strip(), value


# -- showing -----------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if value is None:
        return '"off"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(settings: Settings) -> str:
    """The effective configuration as TOML, each value commented with its source."""
    lines: list[str] = []
    for name, doc in SECTIONS.items():
        lines.append(f"[{name}]  # {doc}")
        keys = [opt for opt in OPTIONS.values() if opt.section == name]
        width = max((len(f"{o.name} = {_toml_value(settings[o.key])}") for o in keys), default=0)
        for opt in keys:
            entry = settings.values[opt.key]
            text = f"{opt.name} = {_toml_value(entry.value)}"
            note = entry.source
            if opt.effective is not None:
                note += f"; effective: {opt.effective(settings)}"
            lines.append(f"{text.ljust(width)}  # {note}")
        lines.append("")
    for name, array in TABLE_ARRAYS.items():
        entries = settings.tables.get(name, ())
        if not entries:
            lines += [f"# [[{name}]]  {array.doc}: none", ""]
        for entry in entries:
            lines.append(f"[[{name}]]  # {settings.table_sources.get(name, 'default')}")
            lines += [f"{key} = {_toml_value(value)}" for key, value in array.show(entry).items()]
            lines.append("")
    return "\n".join(lines)


def reference() -> str:
    """Markdown tables of every option (docs/configuration.md embeds this)."""
    lines: list[str] = []
    for name, doc in SECTIONS.items():
        lines += [f"### `[{name}]`", "", doc, ""]
        lines += [
            "| option | default | kind | environment / flag | meaning |",
            "|---|---|---|---|---|",
        ]
        for opt in OPTIONS.values():
            if opt.section != name:
                continue
            names = [f"`{opt.env}`", *(f"`{a}`" for a in opt.env_aliases)]
            if opt.flag:
                names.append(f"`{opt.flag}`")
            default = _toml_value(opt.default).strip('"')
            lines.append(
                f"| `{opt.name}` | `{default}` | {opt.kind.__doc__} | {', '.join(names)} "
                f"| {opt.doc} |"
            )
        lines.append("")
    return "\n".join(lines)
