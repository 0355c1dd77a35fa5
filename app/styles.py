"""Which fast styles the app offers, and the painting thumbnails shown beside their names.

The paintings are not part of this repository (their licences differ from the code's), so
their folder is configurable and optional: without it the picker shows the names only.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image, ImageOps

from core import codec, settings
from core.catalogue import DEFAULT_STYLES
from core.paths import ONNX_DIR, SHARED_DIR

DEFAULT_PAINTINGS_DIR = SHARED_DIR / "images" / "styles"
THUMBNAIL_SIDE = 160
#: Built files that are not single styles: the 26-style network and the arbitrary pair.
STYLED_MODEL_FILES = ("multistyle", "arbitrary_transform", "arbitrary_predict")
_PAINTING_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def paintings_dir() -> Path:
    """``$STYLE_PAINTINGS_DIR``, else the shared folder's ``images/styles`` (dev machines)."""
    return settings.env("STYLE_PAINTINGS_DIR") or DEFAULT_PAINTINGS_DIR


def onnx_dir() -> Path:
    """Where ``scripts/build.sh`` put the ``<style>.onnx`` files the local fallback runs."""
    return settings.env("STYLE_ONNX_DIR") or ONNX_DIR


def available_styles(built_dir: Path | None = None) -> list[str]:
    """The default styles first, then any extra style built into the ONNX folder
    (``python -m export build --styles candy``), so a new build shows up without code changes.

    Only ``<name>.onnx`` with a dot-free name counts: style names cannot contain dots
    (``train.export.NAME``), while each derived file beside it does (``.uint8``, ``.int8``,
    ``.fp16``), and those are other forms of a style, not styles to offer."""
    built_dir = built_dir or onnx_dir()
    names = {path.name.removesuffix(".onnx") for path in built_dir.glob("*.onnx")}  # none if it is absent
    names -= set(STYLED_MODEL_FILES)  # networks with a style input, offered by their own pickers
    return [*DEFAULT_STYLES, *sorted(name for name in names if "." not in name and name not in DEFAULT_STYLES)]


def painting_path(style: str, folder: Path | None = None) -> Path | None:
    """The style's painting in the paintings folder, or None when it (or the folder) is absent."""
    folder = folder or paintings_dir()
    for suffix in _PAINTING_SUFFIXES:
        path = folder / f"{style}{suffix}"
        if path.is_file():
            return path
    return None


@lru_cache(maxsize=64)
def thumbnail(path: Path, side: int = THUMBNAIL_SIDE) -> Image.Image | None:
    """A small square RGB crop for the picker, so the row of paintings lines up whatever
    their shapes (cached: the page reruns on every click). None for an unreadable file,
    which then shows as a name only, like a missing one."""
    try:
        image = codec.decode(path.read_bytes(), max_side=2 * side)  # the crop keeps at least half
    except (OSError, codec.InputError):
        return None
    return ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS)
