#!/usr/bin/env bash
# Installs what this project needs on a fresh machine. Safe to run again: it skips what is done.
#   scripts/install.sh          the server's runtime set: Java (TorchServe's frontend) and a
#                               Python virtual environment with requirements.txt
#   scripts/install.sh --dev    that, plus the test tools: requirements-dev.txt (pytest, linters,
#                               Playwright's Python package, real-weight test assets, Ray Data for
#                               the bulk CLI: requirements-ray.txt) and Debian's
#                               chromium for the browser test (Playwright's own browser download
#                               is never used: these machines cannot reach it)
set -euo pipefail
cd "$(dirname "$0")/.."
dev=""
[ "${1:-}" = "--dev" ] && dev=1

apt_install() {  # apt-get as root, or through sudo otherwise
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

if ! command -v java >/dev/null 2>&1; then
  echo "[install] Java not found: installing openjdk-17-jre-headless (TorchServe's frontend)"
  apt_install openjdk-17-jre-headless
fi
if [ -n "$dev" ] && ! command -v chromium >/dev/null 2>&1; then
  echo "[install] chromium not found: installing it from apt (browser test of the Streamlit page)"
  apt_install chromium
fi
if [ -n "$dev" ] && ! { command -v curl && command -v jq; } >/dev/null 2>&1; then
  echo "[install] curl/jq not found: installing them from apt (the README's KServe curl example is a test)"
  apt_install curl jq
fi

PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
requirements=requirements.txt
[ -n "$dev" ] && requirements=requirements-dev.txt
# One stamp per set: the dev set includes the runtime set, so a dev install satisfies both.
stamp=.venv/.requirements.sha256
wanted=$(cat requirements.txt requirements-serve.txt requirements-ray.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
stamp_set=$(cut -d' ' -f2 "$stamp" 2>/dev/null || true)
if [ ! -x .venv/bin/python ] || [ "$(cut -d' ' -f1 "$stamp" 2>/dev/null)" != "$wanted" ] \
   || { [ -n "$dev" ] && [ "$stamp_set" != "dev" ]; }; then
  echo "[install] creating .venv and installing $requirements (torch is large: a few minutes)"
  [ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
  .venv/bin/pip install -q -r "$requirements" 2>&1 | { grep -v "^WARNING: Location" || true; }
  echo "$wanted ${dev:+dev}" > "$stamp"
fi
