"""The limits the docs state are the limits the code applies.

Each documented figure is found by the words around it and parsed as a quantity
("16 MiB + 1 KiB", "10,000", "10 s", "none"), then compared with the constant or
default the code uses, so a change on either side fails here until both agree."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from tidelog import websocket_listener as ws_listener
from tidelog.api import shapes
from tidelog.api import websocket as ws_protocol
from tidelog.api.limits import DEFAULT_MAX_BODY_BYTES
from tidelog.config import OPTIONS
from tidelog.options import __name__ as _options_loaded  # declares every option
from tidelog.protocols.mqtt.settings import MQTTSettings

DOCS = Path(__file__).resolve().parents[1] / "docs"
UNITS = {"B": 1, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3, "s": 1, "ms": 0.001}


def quantity(text: str) -> float | None:
    """``16 MiB + 64 KiB`` -> bytes, ``1,000`` -> 1000, ``10 s`` -> 10, ``none`` -> None."""
    text = text.strip().strip("`")
    if text == "none":
        return None
    total = 0.0
    for term in text.split("+"):
        match = re.fullmatch(r"\s*([\d,]+(?:\.\d+)?)\s*([A-Za-z]*)\s*", term)
        assert match, f"not a quantity: {text!r}"
        number, unit = match.groups()
        total += float(number.replace(",", "")) * UNITS.get(unit, 1)
    return total


def documented(doc: str, pattern: str) -> float | None:
    """The quantity in ``docs/<doc>`` that ``pattern``'s group ``q`` captures."""
    text = (DOCS / doc).read_text()
    match = re.search(pattern, text)
    assert match, f"docs/{doc} no longer says {pattern!r}"
    return quantity(match.group("q"))


Q = r"(?P<q>[\d,.]+(?: [KMG]iB)?(?: \+ [\d,.]+ [KMG]iB)?)"
"""A figure as the docs write it."""

CASES = [
    # docs/websocket.md
    ("websocket.md", rf"\| one WebSocket message \(frame\) \| {Q}", ws_listener.MAX_MESSAGE_BYTES),
    ("websocket.md", rf"listener's limit of {Q}", ws_listener.MAX_MESSAGE_BYTES),
    ("websocket.md", rf"waiting for durability \| {Q} per connection", ws_protocol.MAX_IN_FLIGHT),
    ("websocket.md", rf"\| events per `publish_batch` \| {Q}", shapes.MAX_BATCH_EVENTS),
    ("websocket.md", rf"`events`: a list of such events \(1-{Q}\)", shapes.MAX_BATCH_EVENTS),
    ("websocket.md", rf"\| subscriptions \| {Q} per connection", ws_protocol.MAX_SUBSCRIPTIONS),
    ("websocket.md", rf"more than {Q} on one connection", ws_protocol.MAX_SUBSCRIPTIONS),
    ("websocket.md", rf"\| events per `events` frame \| {Q}", ws_protocol.MAX_PUSH_EVENTS),
    ("websocket.md", rf"\| credit \| {Q} per subscription", ws_protocol.MAX_CREDIT),
    # docs/rest.md
    ("rest.md", rf"\| request body \| {Q}", DEFAULT_MAX_BODY_BYTES),
    ("rest.md", rf"\| events per batch publish \| {Q}", shapes.MAX_BATCH_EVENTS),
    ("rest.md", rf"\(events per read\) \| default {Q}", shapes.DEFAULT_READ_LIMIT),
    ("rest.md", rf"\(events per read\) \| default [\d,]+, at most {Q}", shapes.MAX_READ_LIMIT),
    ("rest.md", rf"\(payload bytes per read\) \| default {Q}", shapes.DEFAULT_READ_BYTES),
    ("rest.md", rf"per read\) \| default 1 MiB, at most {Q}", shapes.MAX_READ_BYTES),
    ("rest.md", rf"`wait_ms` \(long-poll\) \| at most {Q}", shapes.MAX_WAIT_MS),
    # docs/operations.md
    ("operations.md", rf"`http.max_body_bytes`, {Q} by default", DEFAULT_MAX_BODY_BYTES),
]


@pytest.mark.parametrize(("doc", "pattern", "value"), CASES)
def test_documented_limit_is_the_code_limit(doc: str, pattern: str, value: int) -> None:
    assert documented(doc, pattern) == value


def test_websocket_credit_frame_range() -> None:
    text = (DOCS / "websocket.md").read_text()
    match = re.search(r"`credit` \| `sub`, `events` \(1-([\d,]+)\)", text)
    assert match and quantity(match.group(1)) == ws_protocol.MAX_CREDIT


def test_mqtt_settings_table_matches_the_defaults() -> None:
    """Every row of docs/mqtt.md's settings table against ``MQTTSettings``."""
    text = (DOCS / "mqtt.md").read_text()
    table = text.split("## Settings (`MQTTSettings`", 1)[1].split("\n\n", 2)[1]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+) \|", table, re.M)
    fields = {field.name: field.default for field in attrs.fields(MQTTSettings)}
    assert {name for name, _ in rows} <= set(fields), "a documented setting does not exist"
    assert len(rows) >= 8
    for name, value in rows:
        assert quantity(value) == fields[name], f"mqtt.md says {name} = {value}"


def test_configuration_doc_is_generated_from_the_options() -> None:
    """docs/configuration.md has its own generated test; here only that the body limit
    the other docs quote is that option's default."""
    assert _options_loaded
    assert OPTIONS["http.max_body_bytes"].default == DEFAULT_MAX_BODY_BYTES
