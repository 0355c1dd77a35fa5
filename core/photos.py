"""Real photos that need no download, for the runtime choice, the export checks and benchmarks.

``images/content`` of the shared folder (``core.paths.SHARED_DIR``) when present (this
project's machines), else the photo matplotlib ships (Grace Hopper), so every check works
anywhere. ``measuring_photos`` gives the runtime choice several kinds of picture: one photo
can flatter a reduced precision that another exposes. No torch import here: serving
processes use it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
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


def measuring_photos(side: int, count: int = 3) -> list[Image.Image]:
    """``count`` different real pictures, each cropped square at ``side``: the shared content
    photos, then Grace Hopper, then (without the shared folder) a real terrain model shaded as
    a landscape and a close-up of Grace Hopper's face. Same size, so they run as one batch."""
    sources = [*content_photos(), default_parity_photo()]
    images = [Image.open(path).convert("RGB") for path in dict.fromkeys(sources)][:count]
    fallbacks = [_shaded_terrain, _close_up]
    while len(images) < count and fallbacks:
        images.append(fallbacks.pop(0)())
    return [ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS) for image in images]


def _shaded_terrain() -> Image.Image:
    """Matplotlib's sample elevation model (a real valley), lit as a relief map: smooth
    gradients and fine ridges, unlike a portrait."""
    import matplotlib.cbook
    from matplotlib import colormaps
    from matplotlib.colors import LightSource

    with np.load(matplotlib.cbook.get_sample_data("jacksboro_fault_dem.npz", asfileobj=False)) as dem:
        elevation = dem["elevation"].astype(np.float64)
    rgba = LightSource(azdeg=315, altdeg=45).shade(elevation, cmap=colormaps["gist_earth"], blend_mode="soft")
    return Image.fromarray((rgba[..., :3] * 255).round().astype(np.uint8))


def _close_up() -> Image.Image:
    """The middle of Grace Hopper's photo: skin and fabric, large areas of little contrast."""
    image = Image.open(default_parity_photo()).convert("RGB")
    width, height = image.size
    return image.crop((width // 4, height // 6, 3 * width // 4, height * 2 // 3))
