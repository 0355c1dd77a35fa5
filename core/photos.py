"""Real photos that need no download, for the runtime choice, the export checks and benchmarks.

``images/content`` of the shared folder (``core.paths.SHARED_DIR``) when present (this
project's machines), else the photo matplotlib ships (Grace Hopper), so every check works
anywhere. No torch
import here: serving processes use it too.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from core.paths import SHARED_DIR

SHARED_IMAGES = SHARED_DIR / "images"


def default_parity_photo() -> Path:
    """A real photo that ships with matplotlib (Grace Hopper), so the check works anywhere."""
    import matplotlib.cbook

    return Path(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))


def content_photos() -> list[Path]:
    return sorted((SHARED_IMAGES / "content").glob("*.jpg")) or [default_parity_photo()]


def paintings() -> list[Path]:
    """Style images: the shared paintings, else a colourful graphic matplotlib ships (a stand-in
    with strong colour and texture, so a style check still has something to transfer)."""
    import matplotlib.cbook

    found = sorted((SHARED_IMAGES / "styles").glob("*.jpg"))
    return found or [Path(matplotlib.cbook.get_sample_data("Minduka_Present_Blue_Pack.png", asfileobj=False))]


def photo(height: int, width: int, index: int = 0) -> Image.Image:
    """A real photo cropped to the aspect ratio and resized, so a network sees natural image
    statistics at every size asked for."""
    photos = content_photos()
    image = Image.open(photos[index % len(photos)]).convert("RGB")
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
