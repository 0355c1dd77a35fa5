#!/usr/bin/env bash
# Fetches the default styles' weights, exports and checks their ONNX files and packages the
# TorchServe archives into model_store/. Up-to-date archives are skipped.
# Weights come from STYLE_WEIGHTS_MIRROR if set, else ../shared/weights if present, else
# from their public URLs.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${STYLE_WEIGHTS_MIRROR:-}" ] && [ -d ../shared/weights ]; then
  export STYLE_WEIGHTS_MIRROR=$(cd ../shared/weights && pwd)
fi
.venv/bin/python -m export build "$@" 2>&1 | { grep -v '^\[torch.onnx\]' || true; }
exit "${PIPESTATUS[0]}"
