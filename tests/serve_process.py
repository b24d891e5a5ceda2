"""``tidelog`` as a subprocess, for end-to-end tests of the command line: one-shot
commands (:func:`run`, :func:`ok`) and ``tidelog serve`` started with the one
launcher of the tests and benchmarks (:func:`start_server`,
:class:`tidelog.testing.server.ServerProcess`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tidelog.testing.server import ServerProcess, server_env

ROOT = Path(__file__).resolve().parents[1]


def env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: no TIDELOG_* from outside, the source tree first."""
    return server_env(ROOT, **extra)


def run(
    *args: str, cwd: Path, input: str | None = None, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    """``python -m tidelog ARGS`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "tidelog", *args],
        cwd=cwd,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env(**extra),
    )


def ok(*args: str, cwd: Path, input: str | None = None) -> str:
    """``python -m tidelog ARGS``, which must succeed; its standard output."""
    result = run(*args, cwd=cwd, input=input)
    assert result.returncode == 0, result.stderr
    return result.stdout


def start_server(
    cwd: Path, *args: str, expect: tuple[str, ...] = (), **extra: str
) -> ServerProcess:
    """``tidelog serve ARGS`` in ``cwd`` with ``extra`` environment variables, once
    the listeners named in ``expect`` report their ports."""
    server = ServerProcess(*args, cwd=cwd, checkout=ROOT, env=extra)
    server.launch()
    if expect:
        server.wait_ready(expect)
    return server
