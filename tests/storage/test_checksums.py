"""Record checksums: the compiled CRC-32C module and its Python twin give the same bytes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tidelog.storage import checksums
from tidelog.storage.checksums import raw_crc32c_python, seal_python
from tidelog.storage.records import NewEvent, decode_record, encode_record

try:
    from tidelog.storage import _crc32c  # type: ignore[attr-defined]
except ImportError:
    _crc32c = None

compiled = pytest.mark.skipif(_crc32c is None, reason="tidelog.storage._crc32c is not built")
states = st.integers(0, 2**32 - 1)


def test_python_crc_is_crc32c() -> None:
    # The CRC-32C check value (RFC 3720): CRC of b"123456789" with the usual inversions.
    assert raw_crc32c_python(0xFFFF_FFFF, b"123456789") ^ 0xFFFF_FFFF == 0xE3069283


def test_python_seal_makes_records_that_check() -> None:
    head = encode_record(NewEvent("a/b", b""), 5)[:-4]
    record = seal_python(head, raw_crc32c_python(0, head), b"payload")
    assert raw_crc32c_python(0, record) == 0
    assert decode_record(3, record).payload == b"payload"
    damaged = bytearray(record)
    damaged[-6] ^= 0x10
    with pytest.raises(Exception, match="record 3: checksum mismatch"):
        decode_record(3, bytes(damaged))


@compiled
def test_compiled_check_value_on_both_paths() -> None:
    assert _crc32c.crc32c(0xFFFF_FFFF, b"123456789") ^ 0xFFFF_FFFF == 0xE3069283
    assert _crc32c.IMPLEMENTATION in ("sse4.2", "table")


@compiled
@settings(deadline=None)
@given(st.binary(max_size=40), st.binary(max_size=300), states)
def test_compiled_matches_python(head: bytes, payload: bytes, state: int) -> None:
    assert _crc32c.crc32c(state, payload) == raw_crc32c_python(state, payload)
    head_state = raw_crc32c_python(0, head)
    sealed = _crc32c.seal(head, head_state, payload)
    assert sealed == seal_python(head, head_state, payload)
    assert _crc32c.seal(head, head_state, bytearray(payload)) == sealed
    assert _crc32c.crc32c(0, memoryview(sealed)) == 0


@compiled
def test_compiled_refuses_bad_arguments() -> None:
    with pytest.raises(TypeError, match="head must be bytes"):
        _crc32c.seal("text", 0, b"x")
    with pytest.raises(OverflowError):
        _crc32c.seal(b"h", 2**32, b"x")
    with pytest.raises(TypeError, match="takes 3 positional arguments"):
        _crc32c.seal(b"h", 0)
    with pytest.raises(TypeError):
        _crc32c.crc32c(0, "text")


@pytest.mark.skipif(
    os.environ.get("CI") != "true" or shutil.which("cc") is None or checksums.PURE_PYTHON,
    reason="CI with a C compiler builds the compiled module; elsewhere it is optional",
)
def test_ci_uses_the_compiled_module() -> None:
    assert checksums.IMPLEMENTATION.startswith("c/")


def test_the_switch_picks_the_path() -> None:
    """TIDELOG_PURE_PYTHON=1 makes records use the Python functions (a fresh process:
    the choice is made at import)."""
    code = "from tidelog.storage import checksums; print(checksums.IMPLEMENTATION)"
    env = {**os.environ, "TIDELOG_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "python"
    env["TIDELOG_PURE_PYTHON"] = "0"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ("python" if _crc32c is None else f"c/{_crc32c.IMPLEMENTATION}")
