#!/usr/bin/env bash
# Starts the Streamlit page on http://127.0.0.1:8501 (loopback only, like TorchServe).
#   STYLE_SERVER_URL  TorchServe inference address (default http://127.0.0.1:8080; the
#                     sidebar can change it). When it does not answer, fast styles run
#                     locally with ONNX Runtime from build/onnx (scripts/build.sh); the
#                     Gatys path needs the server.
#   STYLE_SERVER_TOKEN  TorchServe inference key, when token authorization is on.
#   STYLE_MANAGEMENT_URL  TorchServe management address (default: the inference host, port
#                     8081): the Gatys method reads which loss network the server will use.
#   STYLE_MANAGEMENT_TOKEN  TorchServe management key, when token authorization is on.
# Extra arguments go to `streamlit run`, e.g. --server.port 8502.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m streamlit run app/streamlit_app.py \
  --server.address 127.0.0.1 --browser.gatherUsageStats false "$@"
