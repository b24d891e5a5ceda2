#!/usr/bin/env bash
# Install everything the test suite needs (system packages when we are root,
# Python packages in ./.venv) and run the whole suite, lint and type check.
# This is the README's test command, and what .ci/run calls.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
    mosquitto          # bench/brokers.py and tests/bench start mosquitto 2 as a peer
    nats-server        # bench/brokers.py: the nats-server peer (MQTT + JetStream)
    mosquitto-clients  # mosquitto_pub/mosquitto_sub for MQTT interop tests
    chromium           # tests/api/test_browser.py and tests/console drive it headless
)
if [ "${#APT_PACKAGES[@]}" -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    missing=()
    for pkg in "${APT_PACKAGES[@]}"; do
        dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# mqtt-codec (a 3.1.1 codec used only as a differential oracle in tests) builds
# only with setuptools < 58; pip >= 26 needs the build constraint as well.
if ! .venv/bin/python -c "import mqtt_codec" 2>/dev/null; then
    constraint=$(mktemp)
    printf 'setuptools<58\n' > "$constraint"
    PIP_CONSTRAINT=$constraint PIP_BUILD_CONSTRAINT=$constraint \
        .venv/bin/python -m pip install -q mqtt-codec
    rm -f "$constraint"
fi

# amqtt, a benchmark peer (bench/brokers.py), lives in its own venv so its
# dependencies never mix with tidelog's. Installed once, then reused (quietly);
# bench/brokers.py also honours TIDELOG_BENCH_AMQTT pointing at another binary.
AMQTT_VERSION=0.12.1
AMQTT_VENV=.bench-venv/amqtt
if ! "$AMQTT_VENV/bin/python" -c "import importlib.metadata as m, sys; \
        sys.exit(m.version('amqtt') != '$AMQTT_VERSION')" 2>/dev/null; then
    rm -rf "$AMQTT_VENV"
    "$PYTHON" -m venv "$AMQTT_VENV"
    "$AMQTT_VENV/bin/python" -m pip install -q --disable-pip-version-check "amqtt==$AMQTT_VERSION"
fi

# MQTT.js (npm `mqtt`) for tests/protocols/mqtt/test_interop_mqttjs.py, into
# tests/interop/node_modules (not committed), at the version tests/interop/package.json pins.
if command -v npm >/dev/null && [ ! -d tests/interop/node_modules/mqtt ]; then
    npm install --prefix tests/interop --no-audit --no-fund --no-save --loglevel=error
fi

# Apache Kafka (broker and tools) from Maven Central, for the kafka:// tests
# (tests/kafka_broker.py starts it in KRaft mode); the jars are cached in ~/.m2.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! command -v mvn >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven openjdk-17-jre-headless >/dev/null
fi
bash scripts/kafka/fetch.sh

.venv/bin/ruff check tidelog tests bench
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
# The record tests again on the Python checksum path (tidelog/storage/checksums.py):
# the pass above used the compiled module that `pip install -e` built.
if [ "$#" -eq 0 ]; then
    TIDELOG_PURE_PYTHON=1 .venv/bin/python -m pytest -q tests/storage/test_records.py \
        tests/storage/test_checksums.py tests/storage/test_integrity.py
fi
