"""``tidelog`` as a subprocess, for end-to-end tests of the command line."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
READY = re.compile(r'([\w-]+) listening on [^\s"]+:(\d+)')


def env(**extra: str) -> dict[str, str]:
    """The environment for a subprocess: no TIDELOG_* from outside, the source tree first."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("TIDELOG_")}
    return {**base, "PYTHONPATH": str(ROOT), **extra}


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


class Serve:
    """``tidelog serve`` running; ports from its ready lines, stderr kept in ``lines``."""

    def __init__(self, cwd: Path, *args: str, expect: tuple[str, ...] = (), **extra: str):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tidelog", "serve", *args],
            cwd=cwd,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env(**extra),
        )
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._expect = set(expect)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if expect and not self._ready.wait(30):
            self.kill()
            raise AssertionError("server not ready:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            # the guard keeps the regex off long lines (a 64 KiB client id in a log
            # line made its backtracking take minutes)
            match = READY.search(line) if " listening on " in line else None
            if match:
                self.ports[match.group(1)] = int(match.group(2))
                if self._expect <= set(self.ports):
                    self._ready.set()
        self._ready.set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['HTTP']}"

    def wait_feeds(self, count: int, timeout: float = 20) -> None:
        """Wait until the server has ``count`` open subscriber feeds (``/metrics``):
        a stream or subscription has subscribed."""
        deadline = time.monotonic() + timeout
        pattern = re.compile(rf"^tidelog_feeds {count}(\.0)?$", re.M)
        while not pattern.search(httpx.get(f"{self.url}/metrics", timeout=5).text):
            assert time.monotonic() < deadline, f"no {count} feeds in {timeout} s"
            time.sleep(0.02)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        started = time.monotonic()
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.stop_seconds = time.monotonic() - started
        return code

    def wait_exit(self, timeout: float = 30) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)  # it has taken the last lines
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    @property
    def output(self) -> str:
        return "".join(self.lines)
