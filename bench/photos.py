"""Real photos for benchmarks: ``../shared/images/content`` beside the checkout when present,
else the photo matplotlib ships (the same one the export parity check uses)."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from export.photos import default_parity_photo

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "images"


def content_photos() -> list[Path]:
    return sorted((SHARED_IMAGES / "content").glob("*.jpg")) or [default_parity_photo()]


def photo(height: int, width: int, index: int = 0) -> Image.Image:
    """A real photo cropped to the aspect ratio and resized,
    so the network sees natural image statistics at every benchmarked size."""
    photos = content_photos()
    image = Image.open(photos[index % len(photos)]).convert("RGB")
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)
