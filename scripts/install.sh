#!/usr/bin/env bash
# Installs what this project needs on a fresh machine: Java (for TorchServe) and a Python
# virtual environment with the pinned packages. Safe to run again: it skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_install() {  # apt-get as root, or through sudo otherwise
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v java >/dev/null 2>&1; then
  echo "[install] Java not found: installing openjdk-17-jre-headless (TorchServe's frontend)"
  apt_install openjdk-17-jre-headless
fi
# Debian's chromium drives the Streamlit browser test; Playwright's own browser download is
# never used (these machines cannot reach it). Set SKIP_CHROMIUM=1 to skip on servers.
if [ -z "${SKIP_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "[install] chromium not found: installing it from apt (browser test of the Streamlit page)"
  apt_install chromium
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "[install] creating .venv and installing pinned packages (torch is large: a few minutes)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q -r requirements-dev.txt 2>&1 | { grep -v "^WARNING: Location" || true; }
  echo "$wanted" > "$stamp"
fi
