"""Configuration: precedence (default < file < environment < flags), provenance,
validation with one-line errors naming the key and its source, the docs list."""

from __future__ import annotations

from pathlib import Path

import pytest

import tidelog.options  # noqa: F401  (declares the options)
from tests.serve_process import ROOT, run
from tidelog import config as cfg
from tidelog.api.settings import HTTPSettings
from tidelog.server import ServerConfig


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_precedence_and_provenance(tmp_path: Path) -> None:
    file = write(
        tmp_path / "t.toml",
        '[mqtt]\nport = 1900\nreceive_maximum = 10\n[storage]\nfsync = "never"\n'
        'segment_bytes = "64MiB"\n[sys]\ninterval = "30s"\n[http]\nmax_body_bytes = "1MiB"\n',
    )
    settings = cfg.load(
        file,
        environ={"TIDELOG_MQTT_PORT": "1901", "TIDELOG_STORAGE": "memory://", "HOME": "/x"},
        flags={"mqtt.receive_maximum": ("20", "--set mqtt.receive_maximum")},
    )
    assert settings["mqtt.port"] == 1901
    assert settings.values["mqtt.port"].source == "env TIDELOG_MQTT_PORT"
    assert settings["mqtt.receive_maximum"] == 20
    assert settings.values["mqtt.receive_maximum"].source == "flag --set mqtt.receive_maximum"
    assert settings["storage.fsync"] == "never"
    assert settings.values["storage.fsync"].source == f"file {file}"
    assert settings["storage.segment_bytes"] == 64 * 1024 * 1024
    assert settings["storage.url"] == "memory://"
    assert settings["sys.interval"] == 30.0
    assert settings.values["http.port"].source == "default"
    config = ServerConfig.from_settings(settings)
    assert config.mqtt_port == 1901
    assert config.storage == "memory://"
    # only explicitly set storage options are passed (so a URL's query still counts)
    assert config.storage_options == {"fsync": "never", "segment_bytes": 64 * 1024 * 1024}
    assert config.mqtt_options["receive_maximum"] == 20
    assert config.sys_interval == 30.0
    assert config.sections["mqtt"]["port"] == 1901
    # the [http] options, typed; access_log keeps the configuration's default (on)
    assert config.http_options == HTTPSettings(
        max_body_bytes=1024 * 1024, access_log=True, metrics_cursor_labels=False
    )


def test_http_options_are_typed() -> None:
    """A mapping given in code becomes HTTPSettings; a misspelt name is refused."""
    config = ServerConfig(http_options={"metrics_cursor_labels": True})
    assert config.http_options == HTTPSettings(metrics_cursor_labels=True)
    config.http_options = {"access_log": True}  # type: ignore[assignment]
    assert config.http_options.access_log is True
    with pytest.raises(TypeError, match="metric_labels"):
        ServerConfig(http_options={"metric_labels": True})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[mqtt]\nprot = 1\n", "unknown key mqtt.prot"),
        ("[nope]\nx = 1\n", "unknown section 'nope'"),
        ("[mqtt]\nport = 70000\n", "mqtt.port: port 70000 is out of range"),
        ('[storage]\nsegment_bytes = "lots"\n', "storage.segment_bytes: expected a size"),
        ('[storage]\nfsync = "sometimes"\n', "storage.fsync: fsync policy 'sometimes'"),
        ('[storage]\nurl = "ftp://x"\n', "unknown scheme 'ftp'"),
        ('[logging]\nformat = "xml"\n', "logging.format: expected one of text, json"),
        ("[mqtt\n", "not valid TOML"),
    ],
)
def test_file_errors_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    file = write(tmp_path / "bad.toml", text)
    with pytest.raises(cfg.ConfigError) as error:
        cfg.load(file, environ={})
    assert message in str(error.value)
    assert file in str(error.value)
    assert "\n" not in str(error.value)


def test_environment_errors() -> None:
    with pytest.raises(cfg.ConfigError, match=r"variable TIDELOG_MQTT_PORT: mqtt\.port"):
        cfg.load(environ={"TIDELOG_MQTT_PORT": "many"})
    with pytest.raises(cfg.ConfigError, match="TIDELOG_MQTT_PROT: no such option"):
        cfg.load(environ={"TIDELOG_MQTT_PROT": "1"})
    # variables outside the option sections are not ours to judge
    cfg.load(environ={"TIDELOG_URL": "http://x", "TIDELOG_SOMETHING": "1"})


def test_units() -> None:
    assert cfg.size("1GiB") == 1024**3
    assert cfg.size(4096) == 4096
    assert cfg.duration_ms("7d") == 7 * 86_400_000
    assert cfg.duration_ms("250ms") == 250
    assert cfg.seconds("500ms") == 0.5
    assert cfg.optional(cfg.duration_ms)("off") is None
    assert cfg.port("off") is None
    for bad in ("-1", "1 parsec", True):
        with pytest.raises(ValueError):
            cfg.size(bad)


def test_config_show_through_the_command(tmp_path: Path) -> None:
    file = write(tmp_path / "t.toml", "[mqtt]\nport = 1900\n[http]\nport = 1902\n")
    result = run(
        "config",
        "show",
        "--config",
        file,
        "--http-port",
        "1903",
        cwd=tmp_path,
        TIDELOG_MQTT_PORT="1901",
        TIDELOG_WEBSOCKET_PORT="off",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    section = ""
    seen: dict[str, str] = {}
    for line in lines:
        if line.startswith("["):
            section = line.split("]")[0][1:]
        elif "=" in line:
            key = f"{section}.{line.split('=')[0].strip()}"
            seen[key] = line
    assert seen["mqtt.port"].split("#")[1].strip() == "env TIDELOG_MQTT_PORT"
    assert "1901" in seen["mqtt.port"]
    assert "1903" in seen["http.port"] and "flag --http-port" in seen["http.port"]
    assert (
        '"off"' in seen["websocket.port"] and "env TIDELOG_WEBSOCKET_PORT" in seen["websocket.port"]
    )
    assert "default" in seen["storage.url"]
    assert set(seen) == set(cfg.OPTIONS)


def test_invalid_config_exits_non_zero_with_one_line(tmp_path: Path) -> None:
    file = write(tmp_path / "bad.toml", "[mqtt]\nmax_packet_size = 3\n")
    result = run("serve", "--config", file, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "mqtt.max_packet_size" in result.stderr and "bad.toml" in result.stderr
    assert "Traceback" not in result.stderr


def test_docs_list_every_option_with_its_default() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for opt in cfg.OPTIONS.values():
        assert f"`{opt.env}`" in text, f"docs/configuration.md does not list {opt.key}"
    # the tables in the docs are the generated reference, so the defaults are current
    assert cfg.reference() in text
