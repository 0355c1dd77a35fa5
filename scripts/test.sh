#!/usr/bin/env bash
# Quick start, step 2: the whole test suite (lint, unit tests, a real TorchServe on free
# loopback ports). Installs and builds first, so it works on a fresh clone by itself.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install.sh --dev
scripts/build.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest "$@"
