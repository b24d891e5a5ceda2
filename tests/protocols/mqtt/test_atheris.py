"""A short coverage-guided fuzz run (atheris) of the MQTT decoder and of a live
connection, as CI can afford; ``tests/protocols/mqtt/fuzz_targets.py`` runs them for hours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="atheris is in the 'fuzz' extra")

ROOT = Path(__file__).resolve().parents[3]
SECONDS = 5


@pytest.mark.parametrize("target", ["decoder", "connection"])
def test_short_fuzz_run_finds_nothing(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    result = subprocess.run(
        [
            *(sys.executable, "-m", "tests.protocols.mqtt.fuzz_targets", target, str(corpus)),
            f"-max_total_time={SECONDS}",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=SECONDS + 60,
    )
    output = result.stderr.decode(errors="replace")
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0 and not crashes, f"{crashes}\n{output[-4000:]}"
    assert "Done" in output, output[-2000:]


def test_seed_corpus_decodes_cleanly() -> None:
    from tests.protocols.mqtt.corpus import seed_corpus
    from tests.protocols.mqtt.fuzz_targets import close_live_broker, fuzz_connection, fuzz_decoder

    for seed in seed_corpus():
        fuzz_decoder(seed)
    try:
        for seed in seed_corpus()[:6]:
            fuzz_connection(seed)
    finally:
        close_live_broker()
