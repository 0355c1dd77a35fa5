"""Where the project's folders are: the checkout, its build outputs, the shared folder beside it.

Every module that needs one of these paths imports it from here, so moving a folder is one
edit. Nothing here touches the disk. Inside a model archive this file sits in the unpacked
model folder, so ``ROOT`` names that folder; serving code only asks for ``SHARED_DIR``
through ``core.photos``, which falls back to a photo that ships with matplotlib.
"""

from __future__ import annotations

from pathlib import Path

from core import settings

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "build"
ONNX_DIR = BUILD_DIR / "onnx"  # exported networks and their derived files (scripts/build.sh)
SERVER_DIR = BUILD_DIR / "server"  # config, logs and temp files of `python -m server`
MODEL_STORE = ROOT / "model_store"  # the .mar archives TorchServe serves
# Real weights, photos and paintings that are not part of the repository (their licences differ).
SHARED_DIR = settings.env("STYLE_SHARED_DIR") or ROOT.parent / "shared"
BENCH_RESULTS = ROOT / "bench" / "results"  # what `python -m bench` measured (README quotes it)


def weights_cache() -> Path:
    """Where fetched weights live (style networks, the VGG loss network): ``$STYLE_WEIGHTS_CACHE``,
    else ``~/.cache/style-transfer/weights``. A function, so a test's environment applies."""
    return settings.env("STYLE_WEIGHTS_CACHE")
