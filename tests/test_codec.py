"""The image codec: every kind of input a photo endpoint meets, and the output formats."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from core import codec
from core.codec import InputError, Limits


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_jpeg_png_webp_roundtrip(small_photo):
    for fmt in ("JPEG", "PNG", "WEBP"):
        decoded = codec.decode(_encode(small_photo, fmt))
        assert decoded.mode == "RGB" and decoded.size == small_photo.size


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (40, 20), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    decoded = codec.decode(_encode(image, "JPEG", exif=exif.tobytes()))
    assert decoded.size == (20, 40)


def test_alpha_is_composited_over_white():
    rgba = Image.new("RGBA", (8, 8), (255, 0, 0, 0))
    assert codec.decode(_encode(rgba, "PNG")).getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (8, 8), 0)
    palette.putpalette([0, 0, 0] * 256)
    palette.info["transparency"] = 0
    assert codec.decode(_encode(palette, "PNG", transparency=0)).getpixel((0, 0)) == (255, 255, 255)
    assert codec.decode(_encode(Image.new("LA", (4, 4), (0, 255)), "PNG")).getpixel((0, 0)) == (0, 0, 0)


def test_sixteen_bit_png_is_scaled_not_clipped():
    gray = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    value = codec.decode(_encode(gray, "PNG")).getpixel((0, 0))
    assert 120 <= value[0] <= 136, value


def test_cmyk_and_grayscale_become_rgb():
    assert codec.decode(_encode(Image.new("CMYK", (4, 4), (0, 0, 0, 0)), "JPEG")).mode == "RGB"
    assert codec.decode(_encode(Image.new("L", (4, 4), 77), "PNG")).getpixel((1, 1)) == (77, 77, 77)


@pytest.mark.parametrize(
    "payload, status, words",
    [
        (b"", 400, "empty"),
        (b"hello, this is text", 415, "not a decodable image"),
        (bytes(range(256)) * 4, 415, "not a decodable image"),
    ],
)
def test_garbage_is_refused_with_a_reason(payload, status, words):
    with pytest.raises(InputError, match=words) as error:
        codec.decode(payload)
    assert error.value.status == status


def test_truncated_images_are_refused(small_photo):
    for fmt in ("JPEG", "PNG"):
        data = _encode(small_photo, fmt)
        with pytest.raises(InputError, match="corrupt or truncated"):
            codec.decode(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding():
    # A PNG whose header claims 100000 x 100000 pixels, in 60 bytes.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    with pytest.raises(InputError) as error:
        codec.decode(data)
    assert error.value.status == 413


def test_pixel_limit_and_max_side(small_photo):
    data = _encode(small_photo, "PNG")
    with pytest.raises(InputError, match="pixel limit"):
        codec.decode(data, Limits(max_pixels=100))
    fitted = codec.decode(data, Limits(max_pixels=100 * 100), max_side=100)
    assert max(fitted.size) == 100


def test_array_roundtrip_is_exact(small_photo):
    array = codec.to_array(small_photo)
    assert array.shape == (3, small_photo.height, small_photo.width) and array.dtype == np.float32
    assert np.array_equal(np.asarray(codec.from_array(array)), np.asarray(small_photo))


def test_output_formats_and_negotiation(small_photo):
    assert codec.encode(small_photo, "png").startswith(b"\x89PNG")
    assert codec.encode(small_photo, "jpeg").startswith(b"\xff\xd8")
    assert codec.encode(small_photo, "webp")[8:12] == b"WEBP"
    assert codec.parse_format("JPG") == "jpeg" and codec.parse_format("image/webp") == "webp"
    assert codec.format_from_accept("text/html, image/webp;q=0.9, */*") == "webp"
    assert codec.format_from_accept("*/*") is None
    with pytest.raises(InputError, match="unsupported output format 'gif'"):
        codec.parse_format("gif")
