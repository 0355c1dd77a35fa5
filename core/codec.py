"""The one image codec: bytes -> validated RGB image -> float tensor -> bytes.

Handlers, the CLI and the app all go through here, so every entry point refuses the same
bad input with the same message. Anything the client got wrong raises ``InputError``
(a 4xx with a JSON body naming the problem); nothing here raises for a server fault.
"""

from __future__ import annotations

import io
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import InputError, NotAnImage
from core.settings import MAX_INPUT_PIXELS, MAX_PIXELS

__all__ = ["InputError", "Limits", "decode", "encode", "to_array", "from_array", "parse_format", "format_from_accept"]

#: Formats we decode. GIF gives its first frame; everything else Pillow knows is refused.
DECODABLE = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
#: Formats we encode, by the names clients use, with their media types.
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_FORMAT_ALIASES = {"jpg": "jpeg", "image/jpg": "jpeg", **{v: k for k, v in MEDIA_TYPES.items()}}
#: zlib level of PNG outputs (0 stored .. 9 smallest). Paintings are noisy textures: the
#: higher levels take several times as long for a small saving in size, and the response
#: waits on the encoder, so the default leans to speed; a request may ask for another.
DEFAULT_PNG_COMPRESSION = 1
#: Level 1 is written with zlib's run-length strategy: a painting's rows (after PNG's
#: filters) hold few long repeats for the usual match search to find, so skipping it is
#: faster *and* no larger; runs of one value (flat areas) are still found. Levels 2-9 are
#: zlib's usual search at that level, for clients who want the last few percent of size; they
#: pass no strategy at all: naming even zlib's default one changes what Pillow writes (larger files).
_PNG_STRATEGY = {1: {"compress_type": zlib.Z_RLE}}


@dataclass(frozen=True)
class Limits:
    """Size guards. ``max_input_pixels`` is checked from the header, before decoding, so
    a decompression bomb costs nothing; ``max_pixels`` bounds what the network runs on."""

    max_input_pixels: int = MAX_INPUT_PIXELS
    max_pixels: int = MAX_PIXELS


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
        raise NotAnImage(
            f"body is not a decodable image ({len(data)} bytes); send JPEG, PNG or WebP "
            "(also accepted: GIF first frame, BMP, TIFF)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise _bomb(data, limits) from None
    except (OSError, SyntaxError, ValueError) as error:  # e.g. a header cut short
        raise InputError(f"image data is corrupt or truncated ({error})") from None
    if image.width * image.height > limits.max_input_pixels:
        raise too_large(image.size, limits.max_input_pixels, " for uploads")
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = _to_rgb(image)
    except InputError:
        raise
    except Exception as error:  # Pillow raises many types for corrupt data.
        raise InputError(f"image data is corrupt or truncated ({error})") from None
    rgb = fit(rgb, limits, max_side)
    # The photo's metadata (EXIF, ICC profile, comments, XMP) stays here: paintings built from
    # it (a strength blend copies the photo's info) must never carry it to the client.
    rgb.info = {}
    return rgb


def fit(image: Image.Image, limits: Limits, max_side: int | None = None) -> Image.Image:
    """A decoded image downscaled to ``max_side``, refused (413) if still over ``max_pixels``."""
    if max_side is not None:
        image = fit_max_side(image, max_side)
    if image.width * image.height > limits.max_pixels:
        raise too_large(image.size, limits.max_pixels, "; downscale it or pass max_side")
    return image


def too_large(size: tuple[int, int], limit: int, tail: str = "") -> InputError:
    """The 413 for an image over a pixel limit: its size and the limit, in pixels and MP."""
    width, height = size
    pixels = width * height
    return InputError(
        f"image is {width}x{height} = {pixels} pixels ({pixels / 1e6:.1f} MP), over the "
        f"{limit} pixel limit ({limit / 1e6:.1f} MP){tail}",
        status=413,
    )


def _bomb(data: bytes | bytearray, limits: Limits) -> InputError:
    """Pillow's decompression-bomb refusal, reworded with the declared size and our limit."""
    size = _declared_size(data)
    if size is None:
        return InputError(f"image declares more pixels than allowed (over {limits.max_input_pixels} pixels, "
                          f"{limits.max_input_pixels / 1e6:.1f} MP)", status=413)
    if size[0] * size[1] > limits.max_input_pixels:
        return too_large(size, limits.max_input_pixels, " for uploads")
    # Only a configured limit above Pillow's own safety limit gets here.
    return too_large(size, Image.MAX_IMAGE_PIXELS or 0, " of the image decoder")


def _declared_size(data: bytes | bytearray) -> tuple[int, int] | None:
    """The size an image's header declares, read by the format's own plugin: ``Image.open``
    refuses a decompression bomb before it will say how large the image is."""
    Image.init()
    prefix = bytes(data[:16])
    for name in DECODABLE:
        factory, accept = Image.OPEN[name]
        accepted = accept(prefix) if accept else True
        if not accepted or isinstance(accepted, str):  # a str is Pillow's "not this format" note
            continue
        try:
            return factory(io.BytesIO(data), "").size
        except Exception:  # noqa: BLE001, S112 - a header this plugin cannot read: try the next
            continue
    return None


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


def encode(
    image: Image.Image, fmt: str = "png", quality: int = 92, png_compression: int = DEFAULT_PNG_COMPRESSION
) -> bytes:
    """Encodes to PNG (lossless, the default; zlib level ``png_compression``), JPEG or WebP
    (at ``quality``), with no metadata at all."""
    image = _bare(image)
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, "PNG", compress_level=png_compression, **_PNG_STRATEGY.get(png_compression, {}))
    elif fmt == "jpeg":
        image.save(buffer, "JPEG", quality=quality, subsampling=0 if quality >= 90 else 2)
    else:
        # Method 2 of libwebp's 0 (fastest) .. 6: on paintings the slower methods buy neither
        # size nor fidelity worth their time (bench/results/encoder.md).
        image.save(buffer, "WEBP", quality=quality, method=2)
    return buffer.getvalue()


def _bare(image: Image.Image) -> Image.Image:
    """The pixels without the metadata Pillow's savers copy from the image itself (a JPEG
    comment, an ICC profile, ``encoderinfo`` left by an earlier save): an output never
    carries what came in with a photo, whichever path painted it."""
    if not image.info and not getattr(image, "encoderinfo", None):
        return image
    bare = image.copy()  # the caller's image keeps its info
    bare.info = {}
    return bare
