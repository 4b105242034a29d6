#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: kcat (Debian's, librdkafka 2.0), curl,
# Prometheus (Debian's, scrapes the broker in tests/tests/operator.rs),
# kafka-python and aiokafka (PyPI) and ZooKeeper (Debian's, for the cluster-mode tests; it runs
# on the Java 17 already on the machine). Idempotent; run as root or with sudo available.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

APT_UPDATED=""
apt_install() {
  if [ -z "$APT_UPDATED" ]; then
    $SUDO apt-get update -qq
    APT_UPDATED=1
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null
}

if ! command -v kcat >/dev/null 2>&1; then
  apt_install kcat
fi

# The cluster tests start ZooKeeper straight from its jar (tests/src/lib.rs, ZooKeeper::start),
# never through the package's service, so only the jar and its dependencies matter here.
if [ ! -e /usr/share/java/zookeeper.jar ]; then
  apt_install zookeeper
fi

# The README's commands use curl; the metrics test scrapes the broker with Prometheus.
if ! command -v curl >/dev/null 2>&1; then
  apt_install curl
fi
if ! command -v prometheus >/dev/null 2>&1; then
  apt_install prometheus
fi

PY=${SHARDLOG_PYTHON:-python3}
if ! "$PY" -c 'import kafka' >/dev/null 2>&1; then
  "$PY" -m pip install --quiet 'kafka-python==2.3.3' || "$PY" -m pip install --quiet kafka-python
fi
if ! "$PY" -c 'import confluent_kafka' >/dev/null 2>&1; then
  "$PY" -m pip install --quiet 'confluent-kafka==2.6.1' || "$PY" -m pip install --quiet confluent-kafka
fi
if ! "$PY" -c 'import aiokafka' >/dev/null 2>&1; then
  "$PY" -m pip install --quiet 'aiokafka==0.12.0' || "$PY" -m pip install --quiet aiokafka
fi
# kafka-python decodes lz4 batches only with this (the compaction test's producer uses lz4).
if ! "$PY" -c 'import lz4.frame' >/dev/null 2>&1; then
  "$PY" -m pip install --quiet 'lz4==4.4.5' || "$PY" -m pip install --quiet lz4
fi
