"""CRC-32C for record checksums: the compiled module when it is built, Python otherwise.

Two functions, both on *raw* CRCs (initial value ``state``, no final XOR: the
record format's convention, under which the raw CRC-32C of a whole version 2
record, its trailer included, is 0)::

    raw_crc32c(state, data) -> int      # the CRC of data continuing from state
    seal(head, state, payload) -> bytes # head + payload + 4-byte CRC trailer

``seal`` is what an append calls once per record (``state`` is
``raw_crc32c(0, head)``, kept per head by the caller). Each comes in two
implementations with the same results (tests/storage/test_records.py checks
one against the other):

* ``tidelog.storage._crc32c`` (``_crc32c.c``), built by ``pip install .`` when
  a C compiler is there (the build is optional: without a compiler the
  install still succeeds, without it). Its functions take their arguments by
  METH_FASTCALL and ``seal`` builds the record in one allocation: about 200
  instructions per record more than a version 1 record, against about 2,600
  through ``google_crc32c`` (docs/storage.md, "Cost").
* the Python functions below, on ``google_crc32c`` (itself C with a
  pure-Python fallback of its own).

:data:`IMPLEMENTATION` says which is active: ``"c/sse4.2"`` or ``"c/table"``
(the compiled module, with or without the CPU's CRC-32C instruction), or
``"python"``; ``tidelog --version`` and the server's startup log show it. The
environment variable ``TIDELOG_PURE_PYTHON=1``, read at import, forces the
Python functions (CI runs the record tests a second time with it, so both
paths are tested: scripts/test.sh).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import Any

import google_crc32c

_SEED = 0xFFFF_FFFF
_extend = google_crc32c.extend
_trailer = struct.Struct("<I").pack


def raw_crc32c_python(state: int, data: bytes | bytearray | memoryview) -> int:
    """The raw CRC-32C of ``data`` continuing from ``state`` (0 to start).

    ``google_crc32c.extend`` inverts the CRC at both ends (the usual CRC-32C
    convention); inverting its input and output gives the raw CRC.
    """
    return int(_extend(state ^ _SEED, data)) ^ _SEED


def seal_python(head: bytes, state: int, payload: bytes | bytearray | memoryview) -> bytes:
    """``head + payload`` and their raw CRC-32C (``state`` is that of ``head``), 4 bytes LE."""
    return b"".join((head, payload, _trailer(_extend(state ^ _SEED, payload) ^ _SEED)))


raw_crc32c: Callable[[int, bytes | bytearray | memoryview], int]
seal: Callable[[bytes, int, bytes | bytearray | memoryview], bytes]
compiled: Any
"""The compiled module, or None (not built, or ``TIDELOG_PURE_PYTHON``): it also has
the record hot paths ``tidelog.storage.records`` uses when it is there (``restamp``,
``decode_forwarded``, ``stored_events``, ``decode_plain``)."""
PURE_PYTHON = os.environ.get("TIDELOG_PURE_PYTHON", "") not in ("", "0")
"""``TIDELOG_PURE_PYTHON`` set (to anything but ``0``): use the Python functions."""
try:
    if PURE_PYTHON:
        raise ImportError("TIDELOG_PURE_PYTHON is set")
    from tidelog.storage import _crc32c  # type: ignore[attr-defined]
except ImportError:  # not built (no C compiler at install time): the same results, slower
    raw_crc32c, seal, IMPLEMENTATION = raw_crc32c_python, seal_python, "python"
    compiled = None
else:
    raw_crc32c, seal, compiled = _crc32c.crc32c, _crc32c.seal, _crc32c
    IMPLEMENTATION = f"c/{_crc32c.IMPLEMENTATION}"
