"""Every option of every kind, from every source: the TOML file, the environment and
``--set``. A valid value means exactly what it says; a bad one is a one-line
ConfigError naming the key. A kind without samples here fails the test, so a new
kind cannot slip in untested (issue 20, finding 2: ``allow_anonymous = false`` was
read as unset)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import tidelog.options  # noqa: F401  (declares the options)
from tests.serve_process import run
from tidelog import config as cfg
from tidelog.mesh.config import optional_node_id
from tidelog.server import ServerConfig
from tidelog.webhooks.spec import allowed_urls

TRUE_SPELLINGS: list[tuple[Any, str]] = [
    (True, "true"),
    ("yes", "Yes"),
    ("on", "ON"),
    (1, "1"),
    ("TRUE", "True"),
]
FALSE_SPELLINGS: list[tuple[Any, str]] = [
    (False, "false"),
    ("no", "No"),
    ("off", "OFF"),
    (0, "0"),
    ("FALSE", "False"),
]


class NotText:
    """An invalid TOML value whose text form is valid (only the file is checked)."""

    def __init__(self, value: Any) -> None:
        self.value = value


Sample = tuple[Any, str, Any]
"""A value as TOML writes it, as the environment and --set write it, and its meaning."""


def samples(kind: cfg.Kind) -> tuple[list[Sample], list[Any]]:
    """Valid samples and invalid values (TOML form; the text form is ``str()``)."""
    if kind is cfg.boolean:
        valid = [(t, e, True) for t, e in TRUE_SPELLINGS]
        valid += [(t, e, False) for t, e in FALSE_SPELLINGS]
        return valid, ["maybe", 2, "", "auto"]
    if kind is cfg.boolean_or_auto:
        valid = [(t, e, True) for t, e in TRUE_SPELLINGS]
        valid += [(t, e, False) for t, e in FALSE_SPELLINGS]
        valid += [("auto", "auto", "auto"), ("AUTO", "Auto", "auto")]
        return valid, ["maybe", 2, ""]
    if kind is cfg.port:
        return [(1884, "1884", 1884), (0, "0", 0), ("off", "off", None)], [70_000, -1, "http"]
    if kind is cfg.size:
        return [(4096, "4096", 4096), ("64MiB", "64MiB", 64 * 1024**2), ("2kB", "2kB", 2000)], [
            "lots",
            0,
            True,
        ]
    if kind is cfg.duration_ms:
        return [(500, "500", 500), ("10s", "10s", 10_000), ("7d", "7d", 7 * 86_400_000)], [
            "soon",
            0,
            True,
        ]
    if kind is cfg.seconds:
        return [(2.5, "2.5", 2.5), ("10s", "10s", 10.0), ("500ms", "500ms", 0.5)], [
            "soon",
            0,
            True,
        ]
    if kind is cfg.string:
        return [("x/y.pem", "x/y.pem", "x/y.pem")], ["", NotText(5)]
    if kind is cfg.string_list:
        return [(["a", "b"], "a,b", ["a", "b"]), ([], "", [])], [NotText(5), NotText([1])]
    if kind is allowed_urls:
        hooks = ["https://hooks.example.com/in/", "http://127.0.0.1:9000"]
        return [(hooks, ",".join(hooks), hooks), ([], "", [])], [
            NotText(5),
            ["ftp://x/"],
            ["https://h/?q=1"],
        ]
    if kind is cfg.address:
        return [("0.0.0.0", "0.0.0.0", "0.0.0.0"), ("::1", "::1", "::1")], [""]
    if kind is cfg.fsync_policy:
        return [("never", "never", "never"), ("interval:50", "interval:50", "interval:50")], [
            "sometimes"
        ]
    if kind is optional_node_id:
        return [
            ("edge-1", "edge-1", "edge-1"),
            ("core.eu_2", "core.eu_2", "core.eu_2"),
            ("off", "off", None),
        ], ["a/b", "-x", "x" * 65, NotText(5)]
    if kind is cfg.storage_url:
        return [("memory://", "memory://", "memory://")], ["ftp://x"]
    values = getattr(kind, "values", None)
    if values is not None:  # choice
        return [(v, v, v) for v in values], ["nope"]
    if hasattr(kind, "minimum"):  # integer
        low, high = kind.minimum, kind.maximum  # type: ignore[attr-defined]
        valid = [(low if low is not None else -5, None, None)]
        valid.append((high if high is not None else 1_000_000, None, None))
        out = [(v, str(v), v) for v, _, _ in valid]
        invalid: list[Any] = ["many", True]
        if low is not None:
            invalid.append(low - 1)
        if high is not None:
            invalid.append(high + 1)
        return out, invalid
    inner = getattr(kind, "inner", None)
    if inner is not None:  # optional
        valid, invalid = samples(inner)
        valid = [*valid, ("off", "off", None), ("none", "none", None)]
        return valid, [v for v in invalid if isinstance(v, NotText) or not cfg._is_off(v)]
    raise AssertionError(f"no samples for the option kind {kind.__doc__!r}: add them here")


toml_literal = cfg._toml_value


OPTIONS = list(cfg.OPTIONS.values())


@pytest.mark.parametrize("opt", OPTIONS, ids=[o.key for o in OPTIONS])
def test_every_option_from_every_source(opt: cfg.Option, tmp_path: Path) -> None:
    valid, invalid = samples(opt.kind)
    assert valid and invalid
    file = tmp_path / "c.toml"
    for toml_value, text, expected in valid:
        file.write_text(f"[{opt.section}]\n{opt.name} = {toml_literal(toml_value)}\n")
        from_file = cfg.load(str(file), environ={})
        assert from_file[opt.key] == expected, (toml_value, from_file[opt.key])
        assert from_file.values[opt.key].source == f"file {file}"
        from_env = cfg.load(environ={opt.env: text})
        assert from_env[opt.key] == expected, (text, from_env[opt.key])
        from_flag = cfg.load(environ={}, flags={opt.key: (text, f"--set {opt.key}")})
        assert from_flag[opt.key] == expected, (text, from_flag[opt.key])
        key, raw = cfg.parse_set(f"{opt.key}={text}")
        assert cfg.load(environ={}, flags={key: (raw, "--set")})[key] == expected
        # a value reaches the server configuration as parsed
        assert cfg.load(environ={opt.env: text}).section(opt.section)[opt.name] == expected
    for bad in invalid:
        text_too = not isinstance(bad, NotText)
        bad = bad if text_too else bad.value
        file.write_text(f"[{opt.section}]\n{opt.name} = {toml_literal(bad)}\n")
        with pytest.raises(cfg.ConfigError, match=opt.key.replace(".", r"\.")):
            cfg.load(str(file), environ={})
        if not text_too or isinstance(bad, bool):
            continue  # no text form of its own
        with pytest.raises(cfg.ConfigError, match=opt.key.replace(".", r"\.")):
            cfg.load(environ={opt.env: str(bad)})
        with pytest.raises(cfg.ConfigError, match=opt.key.replace(".", r"\.")):
            cfg.load(environ={}, flags={opt.key: (str(bad), f"--set {opt.key}")})


def test_every_default_is_a_valid_value() -> None:
    for opt in OPTIONS:
        if opt.default is not None:
            assert opt.kind(opt.default) == opt.default, opt.key


@pytest.mark.parametrize(
    ("spelling", "allowed"),
    [("false", False), ("no", False), ("0", False), ("true", True), ("on", True)],
)
def test_allow_anonymous_means_what_it_says(spelling: str, allowed: bool, tmp_path: Path) -> None:
    from tidelog.security.config import anonymous_allowed

    for settings in (
        cfg.load(environ={"TIDELOG_SECURITY_ALLOW_ANONYMOUS": spelling}),
        cfg.load(environ={}, flags={"security.allow_anonymous": (spelling, "--set")}),
    ):
        server = ServerConfig.from_settings(settings)
        assert server.security.allow_anonymous is allowed
        assert anonymous_allowed(server) is allowed  # on loopback too: no silent "auto"
    file = tmp_path / "c.toml"
    literal = spelling if spelling in ("true", "false") else repr(spelling)
    file.write_text(f"[security]\nallow_anonymous = {literal}\n")
    assert anonymous_allowed(ServerConfig.from_settings(cfg.load(str(file), environ={}))) is allowed


def test_allow_anonymous_auto_follows_the_bind_address() -> None:
    from tidelog.security.config import anonymous_allowed

    loopback = ServerConfig.from_settings(cfg.load(environ={}))
    assert loopback.security.allow_anonymous == "auto"
    assert anonymous_allowed(loopback) is True
    wide = ServerConfig.from_settings(
        cfg.load(environ={"TIDELOG_BIND": "0.0.0.0", "TIDELOG_SECURITY_ALLOW_ANONYMOUS": "auto"})
    )
    assert anonymous_allowed(wide) is False


def test_config_show_prints_the_effective_value(tmp_path: Path) -> None:
    shown = run("config", "show", "--set", "security.allow_anonymous=no", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    line = next(x for x in shown.stdout.splitlines() if x.startswith("allow_anonymous"))
    assert line.startswith("allow_anonymous = false") and "effective: refused" in line
    shown = run("config", "show", cwd=tmp_path)
    line = next(x for x in shown.stdout.splitlines() if x.startswith("allow_anonymous"))
    assert line.startswith('allow_anonymous = "auto"')
    assert "effective: allowed (every listener on loopback)" in line
    shown = run("config", "show", "--bind", "0.0.0.0", cwd=tmp_path)
    line = next(x for x in shown.stdout.splitlines() if x.startswith("allow_anonymous"))
    assert "effective: refused (bound to 0.0.0.0)" in line
