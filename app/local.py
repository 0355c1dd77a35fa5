"""The local fallback: the server's own stylizer, run in the app's process when no server
answers.

It exists so the app is usable on a laptop without TorchServe. It opens the same
``core.stylizer.Stylizer`` the handler serves with (same engine choice, same finishing),
through ``stylize.models`` (which also gives the "not built yet, run ..." message), so
its pixels agree with the server's and there is one copy of each step.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image

from core.stylizer import Stylizer
from stylize import models


@lru_cache(maxsize=4)
def stylizer(style: str, onnx_dir: Path) -> Stylizer:
    """One stylizer per style, kept across reruns: opening one costs far more than a small image.

    A built ``<style>.onnx`` runs whatever its origin (a default style or one trained with
    ``python -m train export``); a missing one raises ``ModelError`` saying how to build it.
    """
    built = onnx_dir / f"{style}.onnx"
    return models.load(str(built) if built.is_file() else style, onnx_dir)


def stylize(photo: Image.Image, style: str, params: dict, onnx_dir: Path) -> Image.Image:
    """The handler's steps on a decoded photo: the network, then the finishing options."""
    return stylizer(style, onnx_dir).paint([photo], [{"tile": None, **params}])[0]
