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
from core.style_options import finish

from .conftest import PLANTED, assert_no_metadata, jpeg_declaring, jpeg_with_metadata


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


def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.parametrize("data", [_png_header_only(20_000, 20_000), jpeg_declaring(20_000, 20_000)],
                         ids=["png", "jpeg"])
def test_oversized_image_413_gives_its_size_and_the_limit(data):
    """20000x20000 is past Pillow's own bomb guard, which refuses without saying the size."""
    with pytest.raises(InputError) as error:
        codec.decode(data)
    assert error.value.status == 413
    message = str(error.value)
    assert "20000x20000 = 400000000 pixels (400.0 MP)" in message, message
    assert f"{Limits.max_input_pixels} pixel limit ({Limits.max_input_pixels / 1e6:.1f} MP)" in message, message


def test_pixel_limit_after_max_side_gives_size_and_limit(small_photo):
    with pytest.raises(InputError) as error:
        codec.decode(_encode(small_photo, "PNG"), Limits(max_pixels=100))
    width, height = small_photo.size
    assert f"{width}x{height} = {width * height} pixels" in str(error.value)
    assert "100 pixel limit (0.0 MP)" in str(error.value) and "max_side" in str(error.value)


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_no_input_metadata_reaches_an_output(small_photo, fmt, strength):
    """Every path decodes, finishes and encodes here: a strength blend copies the photo's
    ``info``, so the photo must arrive without it and the encoder must write none."""
    data = jpeg_with_metadata(small_photo)
    assert PLANTED in data and {"comment", "exif", "icc_profile", "xmp"} <= set(Image.open(io.BytesIO(data)).info)
    photo = codec.decode(data)
    assert not photo.info
    stand_in = photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)  # a "painting" made from the photo
    painting = finish(stand_in, photo, {"strength": strength, "preserve_colors": False})
    assert not painting.info
    assert_no_metadata(codec.encode(painting, fmt))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_writes_no_metadata_an_image_carries(small_photo, fmt):
    """Whatever image reaches the encoder (the app's, a future path's), its metadata stays out;
    the caller's image keeps its own."""
    image = Image.open(io.BytesIO(jpeg_with_metadata(small_photo)))
    image.load()
    assert_no_metadata(codec.encode(image, fmt))
    assert image.info["comment"] == PLANTED


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


def test_png_compression_level_trades_size_not_pixels(small_photo):
    stored, smallest = codec.encode(small_photo, "png", png_compression=0), codec.encode(small_photo, "png",
                                                                                        png_compression=9)
    assert len(stored) > len(smallest)
    for data in (stored, smallest):
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data))), np.asarray(small_photo))
    assert codec.encode(small_photo, "png") == codec.encode(small_photo, "png",
                                                            png_compression=codec.DEFAULT_PNG_COMPRESSION)


def test_png_default_is_lossless_and_no_larger_than_level_6_on_a_painting(small_photo):
    """The default (level 1, run-length strategy) on a painting-like texture: pixels exact, and
    the file no larger than Pillow's usual level 6, which takes several times as long (plain
    level 1 is about 1.6 % larger here, so the bound tells the strategies apart)."""
    rng = np.random.default_rng(0)
    texture = np.asarray(small_photo, np.int16) + rng.integers(-24, 25, (*small_photo.size[::-1], 3))
    painting = Image.fromarray(np.clip(texture, 0, 255).astype(np.uint8))
    default, level6 = codec.encode(painting, "png"), codec.encode(painting, "png", png_compression=6)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(default))), np.asarray(painting))
    assert len(default) <= len(level6) * 1.005, (len(default), len(level6))
