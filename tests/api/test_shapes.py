"""The JSON shapes: the fast event encoder writes exactly the documented shape."""

from __future__ import annotations

import base64
import json

from hypothesis import given
from hypothesis import strategies as st

from tidelog.api.shapes import dumps, encode_event, encode_events, event_out
from tidelog.storage import Event, Properties

texts = st.text(max_size=20)
properties = st.builds(
    Properties,
    payload_format=st.none() | st.sampled_from([0, 1]),
    message_expiry=st.none() | st.integers(0, 2**32 - 1),
    content_type=st.none() | texts,
    response_topic=st.none() | texts,
    correlation_data=st.none() | st.binary(max_size=20),
    user_properties=st.lists(st.tuples(texts, texts), max_size=3),
)
events = st.builds(
    Event,
    offset=st.integers(0, 2**63 - 1),
    timestamp=st.integers(0, 2**63 - 1),
    topic=st.text(min_size=1, max_size=30),
    payload=st.binary(max_size=50) | texts.map(str.encode),
    qos=st.sampled_from([0, 1, 2]),
    retain=st.booleans(),
    properties=st.none() | properties,
)


@given(events, st.sampled_from(["base64", "text"]))
def test_encode_event_is_event_out(event: Event, encoding: str) -> None:
    fast = json.loads(encode_event(event, encoding))  # type: ignore[arg-type]
    assert fast == json.loads(dumps(event_out(event, encoding)))  # type: ignore[arg-type]
    if fast["encoding"] == "base64":
        assert base64.b64decode(fast["payload"]) == event.payload
    else:
        assert encoding == "text"
        assert fast["payload"].encode() == event.payload


def test_text_falls_back_to_base64_per_event() -> None:
    batch = [Event(0, 1, "a", b"ok"), Event(1, 1, "a", b"\xff")]
    out = json.loads(encode_events(batch, "text"))
    assert [(e["payload"], e["encoding"]) for e in out] == [("ok", "text"), ("/w==", "base64")]
