"""The one image codec: bytes -> validated RGB image -> float tensor -> bytes.

Handlers, the CLI and the app all go through here, so every entry point refuses the same
bad input with the same message. Anything the client got wrong raises ``InputError``
(a 4xx with a JSON body naming the problem); nothing here raises for a server fault.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import InputError

__all__ = ["InputError", "Limits", "decode", "encode", "to_array", "from_array", "parse_format", "format_from_accept"]

#: Formats we decode. GIF gives its first frame; everything else Pillow knows is refused.
DECODABLE = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Formats we encode, by the names clients use, with their media types.
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_FORMAT_ALIASES = {"jpg": "jpeg", "image/jpg": "jpeg", **{v: k for k, v in MEDIA_TYPES.items()}}


@dataclass(frozen=True)
class Limits:
    """Size guards. ``max_input_pixels`` is checked from the header, before decoding, so
    a decompression bomb costs nothing; ``max_pixels`` bounds what the network runs on."""

    max_input_pixels: int = 64_000_000
    max_pixels: int = 4096 * 4096


def decode(data: bytes | bytearray, limits: Limits = Limits(), max_side: int | None = None) -> Image.Image:
    """Validates and decodes an encoded image into 8-bit RGB, upright per its EXIF tag.

    Transparent pixels are composited over white (the usual expectation for a photo
    export); 16-bit images are scaled, not clipped, to 8 bits.
    """
    if not data:
        raise InputError("empty request body: send an image (JPEG, PNG or WebP)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=DECODABLE)
    except UnidentifiedImageError:
        raise InputError(
            f"body is not a decodable image ({len(data)} bytes); send JPEG, PNG or WebP "
            "(also accepted: GIF first frame, BMP, TIFF)",
            status=415,
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("image declares more pixels than allowed", status=413) from None
    except (OSError, SyntaxError, ValueError) as error:  # e.g. a header cut short
        raise InputError(f"image data is corrupt or truncated ({error})") from None
    width, height = image.size
    if width * height > limits.max_input_pixels:
        raise InputError(
            f"image is {width}x{height} = {width * height} pixels, over the "
            f"{limits.max_input_pixels} pixel limit for uploads",
            status=413,
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except InputError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt data.
        raise InputError(f"image data is corrupt or truncated ({error})") from None
    if max_side is not None:
        rgb = fit_max_side(rgb, max_side)
    if rgb.width * rgb.height > limits.max_pixels:
        raise InputError(
            f"image is {rgb.width}x{rgb.height} = {rgb.width * rgb.height} pixels, over the "
            f"{limits.max_pixels} pixel limit; downscale it or pass max_side",
            status=413,
        )
    return rgb


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # Pillow's convert("RGB") clips 16-bit values at 255, turning photos white.
        high = np.asarray(image, dtype=np.float64)
        scale = 65535.0 if high.max() > 255 else 255.0
        image = Image.fromarray(np.clip(high / scale * 255.0 + 0.5, 0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def fit_max_side(image: Image.Image, max_side: int) -> Image.Image:
    """Downscales so the longer side is at most ``max_side``; never upscales."""
    if max_side < 1:
        raise InputError(f"max_side must be a positive integer, got {max_side}")
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def to_array(image: Image.Image) -> np.ndarray:
    """RGB image -> float32 ``[3, H, W]`` in ``[0, 255]``, the networks' input range."""
    return np.ascontiguousarray(np.asarray(image, dtype=np.float32).transpose(2, 0, 1))


def from_array(array: np.ndarray) -> Image.Image:
    """Float ``[3, H, W]`` in ``[0, 255]`` -> RGB image (rounded and clipped)."""
    pixels = np.clip(np.rint(array), 0, 255).astype(np.uint8).transpose(1, 2, 0)
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")


def parse_format(value: str | None) -> str | None:
    """Normalizes a client's output format ('jpg', 'image/webp', ...); None if not given."""
    if value is None or value == "":
        return None
    name = value.strip().lower()
    name = _FORMAT_ALIASES.get(name, name)
    if name not in MEDIA_TYPES:
        raise InputError(f"unsupported output format '{value}'; use one of {', '.join(MEDIA_TYPES)}")
    return name


def format_from_accept(accept: str | None) -> str | None:
    """Picks the first encodable type an Accept header lists, in order; None if none."""
    for part in (accept or "").split(","):
        media = part.split(";")[0].strip().lower()
        if media in _FORMAT_ALIASES:
            return _FORMAT_ALIASES[media]
    return None


def encode(image: Image.Image, fmt: str = "png", quality: int = 92) -> bytes:
    """Encodes to PNG (lossless, the default), JPEG or WebP."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=6)
    elif fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    else:
        image.save(buffer, "WEBP", quality=quality, method=4)
    return buffer.getvalue()
