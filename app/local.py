"""The local fallback: the batch CLI's ONNX runner and the handler's finishing step, run in
the app's own process when no server answers.

It exists so the app is usable on a laptop without TorchServe. It reuses
``stylize.models`` (the handler's session settings, the "not built yet, run ..." message)
and ``core.style_options.finish``, so its pixels agree with the server's (same graph,
same finishing) and there is one copy of each.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image

from core import codec
from core.style_options import finish
from stylize import models


@lru_cache(maxsize=4)
def _runner(style: str, onnx_dir: Path) -> models.Runner:
    """One session per style, kept across reruns: opening one costs far more than a small image.

    A built ``<style>.onnx`` runs whatever its origin (a default style or one trained with
    ``python -m train export``); a missing one raises ``ModelError`` saying how to build it.
    """
    built = onnx_dir / f"{style}.onnx"
    return models.load(str(built) if built.is_file() else style, onnx_dir)[1]


def stylize(photo: Image.Image, style: str, params: dict, onnx_dir: Path) -> Image.Image:
    """The handler's steps on a decoded photo: the network, then ``finish`` (colours, strength)."""
    painted = codec.from_array(_runner(style, onnx_dir)(codec.to_array(photo)))
    return finish(painted, photo, params)
