#!/usr/bin/env bash
# Fetch Apache Kafka (the broker, kafka_2.13, and kafka-tools for
# kafka-producer-perf-test) with Maven from Maven Central into scripts/kafka/lib.
# The jars are cached in ~/.m2; a second run only copies them. tests/kafka_broker.py
# starts KRaft brokers from scripts/kafka/lib.
set -euo pipefail
cd "$(dirname "$0")"
if [ -f lib/.complete ] && [ lib/.complete -nt pom.xml ]; then
    exit 0
fi
rm -rf lib
mvn -q -B dependency:copy-dependencies -DoutputDirectory=lib -DincludeScope=runtime
touch lib/.complete
