#!/usr/bin/env bash
# Installs what the test suite needs on a Debian machine: kcat (Debian's, librdkafka 2.0) and
# kafka-python (PyPI). Idempotent; run as root or with sudo available.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

if ! command -v kcat >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq kcat >/dev/null
fi

PY=${SHARDLOG_PYTHON:-python3}
if ! "$PY" -c 'import kafka' >/dev/null 2>&1; then
  "$PY" -m pip install --quiet 'kafka-python==2.3.3' || "$PY" -m pip install --quiet kafka-python
fi
