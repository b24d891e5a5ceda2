"""``[node]`` and ``[[link]]``: parsing, errors, ``config show``, the node's identity."""

from __future__ import annotations

from pathlib import Path

import pytest

import tidelog
import tidelog.options
from tests.serve_process import run
from tidelog import config as cfg
from tidelog.context import ServerConfig
from tidelog.mesh.config import LinkConfig, parse_links
from tidelog.mesh.identity import load_identity

CONTRACT = """
[node]
id = "edge-1"
[[link]]
name = "core"
url = "mqtt://127.0.0.1:1884"
pull = ["commands/edge-1/#"]
push = ["telemetry/#"]
mode = "local"
[[link]]
name = "backup"
url = "mqtts://core.example:8883"
push = "telemetry/#"
mode = "transit"
username = "edge"
password = "s3cret"
tls_ca = "ca.pem"
hop_limit = 4
"""


def test_the_contract_keys_reach_the_server_config(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(CONTRACT)
    config = ServerConfig.from_settings(cfg.load(str(file), environ={}))
    assert config.node_id == "edge-1"
    core, backup = config.links
    assert core == LinkConfig(
        "core", "mqtt://127.0.0.1:1884", ("commands/edge-1/#",), ("telemetry/#",), "local"
    )
    assert (core.host, core.port, core.tls) == ("127.0.0.1", 1884, False)
    assert backup.push == ("telemetry/#",) and backup.mode == "transit"
    assert (backup.port, backup.tls, backup.hop_limit) == (8883, True, 4)
    assert backup.username == "edge" and backup.password == "s3cret"


def test_node_id_from_flag_and_environment() -> None:
    assert cfg.load(environ={}, flags={"node.id": ("core", "--node-id")})["node.id"] == "core"
    assert cfg.load(environ={"TIDELOG_NODE_ID": "r-1"})["node.id"] == "r-1"
    assert cfg.load(environ={})["node.id"] is None


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("url = 'mqtt://h:1'", "name is required"),
        ("name = 'a'", "url is required"),
        ("name = 'a'\nurl = 'http://h:1'", "url must be mqtt://"),
        ("name = 'a/b'\nurl = 'mqtt://h:1'", "name 'a/b'"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nmode = 'flood'", "mode must be"),
        ("name = 'a'\nurl = 'mqtt://h:1'\npull = ['a/#/b']", "pull"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nwindow = 0", "window"),
        ("name = 'a'\nurl = 'mqtt://h:1'\ncolour = 'red'", "unknown key colour"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nlocal_prefix = 'a/+/'", "local_prefix"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nremote_prefix = 3", "remote_prefix"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nbridge = 'amqp'", "bridge must be"),
        ("name = 'a'\nurl = 'mqtt://u:pw@h:1'", "use the username and password keys"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nbridge = 'mqtt5'\npull = ['$SYS/#']", "no '\\$' topics"),
        ("name = 'a'\nurl = 'mqtts://u@h:1'", "must not contain user:password@"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nbridge = 'mqtt5'\ninterest = true", "interest needs"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nbridge = 'mqtt5'\npush_interest = true", "push_inter"),
        ("name = 'a'\nurl = 'mqtt://h:1'\npush_qos = 2", "push_qos is for bridges"),
        ("name = 'a'\nurl = 'mqtt://h:1'\nbridge = 'mqtt5'\npush_qos = 0", "push_qos must be"),
        (
            "name = 'a'\nurl = 'mqtt://h:1'\nbridge = 'mqtt311'\npull = ['#']\npush = ['t/#']",
            "No-Local",
        ),
    ],
)
def test_bad_links_are_refused_naming_the_key(tmp_path: Path, table: str, message: str) -> None:
    file = tmp_path / "c.toml"
    file.write_text(f"[[link]]\n{table}\n")
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(str(file), environ={})


def test_link_names_are_unique() -> None:
    table = {"name": "a", "url": "mqtt://h:1"}
    with pytest.raises(ValueError, match="used twice"):
        parse_links([table, table])


def test_links_do_not_come_from_the_environment_or_set() -> None:
    with pytest.raises(cfg.ConfigError):
        cfg.load(environ={"TIDELOG_LINK_NAME": "x"}, flags={})
    with pytest.raises(cfg.ConfigError):
        cfg.parse_set("link.name=x")


def test_config_show_prints_links_without_the_password(tmp_path: Path) -> None:
    file = tmp_path / "c.toml"
    file.write_text(CONTRACT)
    out = run("config", "show", "--config", str(file), cwd=tmp_path).stdout
    assert 'id = "edge-1"' in out
    assert out.count("[[link]]") == 2
    assert 'pull = ["commands/edge-1/#"]' in out and 'mode = "transit"' in out
    assert "s3cret" not in out and 'password = "********"' in out
    none = run("config", "show", cwd=tmp_path).stdout
    assert "# [[link]]" in none and "none" in none


async def test_identity_is_stable_and_new_with_a_new_data_directory(tmp_path: Path) -> None:
    async with tidelog.open(f"lmdb://{tmp_path / 'a'}") as broker:
        first = await load_identity(broker, None)
        named = await load_identity(broker, "edge-1")
    assert first.node_id.startswith("node-") and named.node_id == "edge-1"
    assert named.incarnation == first.incarnation
    async with tidelog.open(f"lmdb://{tmp_path / 'a'}") as broker:
        assert await load_identity(broker, None) == first
    async with tidelog.open(f"lmdb://{tmp_path / 'b'}") as broker:
        other = await load_identity(broker, None)
    assert other.node_id != first.node_id and other.incarnation != first.incarnation


def test_prefixes_rename_topics_and_filters_both_ways() -> None:
    link = parse_links(
        [
            {
                "name": "a",
                "url": "mqtt://h:1",
                "pull": ["cmd/#"],
                "push": ["t/#"],
                "local_prefix": "site/",
                "remote_prefix": "edges/e1/",
            }
        ]
    )[0]
    assert link.remote_pull == ("edges/e1/cmd/#",) and link.local_push == ("site/t/#",)
    assert link.to_local("edges/e1/cmd/x") == "site/cmd/x"
    assert link.to_remote("site/t/1") == "edges/e1/t/1"
    assert link.to_local("edges/e1") == "site"  # the parent level, matched by edges/e1/#
    assert link.to_local("other/x") is None
    bare = parse_links([{"name": "b", "url": "mqtt://h:1", "remote_prefix": "up/"}])[0]
    assert bare.remapped and bare.to_remote("t/1") == "up/t/1" and bare.to_local("up") is None
    assert not parse_links([{"name": "c", "url": "mqtt://h:1"}])[0].remapped
