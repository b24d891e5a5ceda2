"""A test CA and certificates made with the ``openssl`` binary (EC P-256, 2 days)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import attrs
import pytest

EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@attrs.frozen
class Pair:
    cert: str
    key: str


@attrs.frozen
class PKI:
    ca: str
    server: Pair
    alice: Pair
    """A client certificate with CN=alice."""
    stranger: Pair
    """A client certificate from another CA."""


def _ca(directory: Path, name: str) -> Pair:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl("req", "-x509", *EC, "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             "-keyout", str(key), "-out", str(cert))  # fmt: skip
    return Pair(str(cert), str(key))


def _issue(directory: Path, ca: Pair, name: str, extensions: str) -> Pair:
    cert, key, csr = (directory / f"{name}.{ext}" for ext in ("pem", "key", "csr"))
    ext = directory / f"{name}.ext"
    ext.write_text(extensions)
    _openssl("req", *EC, "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr))
    _openssl("x509", "-req", "-in", str(csr), "-CA", ca.cert, "-CAkey", ca.key,
             "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert))  # fmt: skip
    return Pair(str(cert), str(key))


def make_pki(directory: Path) -> PKI:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory.mkdir(exist_ok=True)
    ca = _ca(directory, "test-ca")
    server = _issue(
        directory, ca, "localhost",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )  # fmt: skip
    alice = _issue(directory, ca, "alice", "extendedKeyUsage=clientAuth\n")
    other = _ca(directory, "other-ca")
    stranger = _issue(directory, other, "mallory", "extendedKeyUsage=clientAuth\n")
    return PKI(ca.cert, server, alice, stranger)
