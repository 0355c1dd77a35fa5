#!/usr/bin/env bash
# Quick start, step 1: install everything, build the default styles' archives, and start
# TorchServe on 127.0.0.1:8080 (inference), :8081 (management), :8082 (metrics).
# Prints a working curl line. Stop with: .venv/bin/python -m server stop
# Extra arguments go to the server launcher, e.g. --token-auth.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh
scripts/build.sh
exec .venv/bin/python -m server start "$@"
