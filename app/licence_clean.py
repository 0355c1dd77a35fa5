"""The page's licence-clean paths: one of the 26 styles (or a blend), and "your own style image
(fast)". Like ``app.client.stylize_fast``: TorchServe's ``multistyle`` / ``arbitrary`` model when
the server answers, else the same code in this process (``core.multistyle`` /
``core.arbitrary``, the handlers' own), so the pixels agree. Free of Streamlit, for the tests.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import Image

from app.client import (
    ClientError,
    FastOptions,
    Outcome,
    decode_photo,
    server_or_local,
)
from core import arbitrary, codec, multistyle
from core.catalogue import CONTACT_SHEET, tile_box
from core.errors import InputError
from core.multistyle import NUM_STYLES, STYLE_NAMES


@lru_cache(maxsize=1)
def thumbnails() -> list[Image.Image] | None:
    """The 26 styles' tiles from the contact sheet (``python -m export.contact_sheet``), or None
    where the sheet is absent."""
    try:
        sheet = Image.open(CONTACT_SHEET).convert("RGB")
    except OSError:
        return None
    return [sheet.crop(tile_box(index)) for index in range(NUM_STYLES)]


def label(index: int) -> str:
    return f"{index} {STYLE_NAMES[index]}"


@lru_cache(maxsize=1)
def _multistyle(onnx_dir: Path) -> multistyle.MultistylePainter:
    stylizer = multistyle.open_stylizer(onnx_dir / "multistyle.onnx")
    return multistyle.MultistylePainter(stylizer, multistyle.parse_style(0))


@lru_cache(maxsize=1)
def _arbitrary(onnx_dir: Path) -> arbitrary.ArbitraryStylizer:
    return arbitrary.ArbitraryStylizer.open(onnx_dir)


def stylize_multistyle(photo_bytes: bytes, style: str, options: FastOptions, url: str, onnx_dir: Path) -> Outcome:
    """One of the 26 styles or a blend (``"3:0.5,12:0.5"``), server first."""
    params = options.params()
    try:
        weights = multistyle.parse_style(style)
    except InputError as error:
        raise ClientError(str(error)) from None
    photo = decode_photo(photo_bytes, params["max_side"])
    fields = {"format": "png", "style": style, "strength": str(params["strength"]),
              "preserve_colors": "true" if params["preserve_colors"] else "false"}

    def local() -> tuple[bytes, str]:
        painter = _multistyle(onnx_dir)
        stylizer = multistyle.MultistylePainter(painter.stylizer, weights)
        painted = stylizer.paint([photo], [{**params, "tile": False}])[0]
        return codec.encode(painted, "png"), stylizer.runtime

    files = {"image": ("photo.png", codec.encode(photo, "png"), "image/png")}
    data, backend, note = server_or_local("multistyle", fields, files, url, local)
    return Outcome(photo, codec.decode(data), data, backend, note)


def stylize_own_style(photo_bytes: bytes, style_bytes: bytes, options: FastOptions, url: str,
                      onnx_dir: Path) -> Outcome:
    """Any painting as the style, in one pass (``arbitrary``), server first. ``strength``
    moves along the style vector from the photo's own style, as on the endpoint."""
    params = options.params()
    photo = decode_photo(photo_bytes, params["max_side"])
    fields = {"format": "png", "strength": str(params["strength"]),
              "preserve_colors": "true" if params["preserve_colors"] else "false"}
    files = {"content": ("photo.png", codec.encode(photo, "png"), "image/png"),
             "style": ("style", style_bytes, "application/octet-stream")}

    def local() -> tuple[bytes, str]:
        painter = _arbitrary(onnx_dir)
        try:
            painted = painter.paint(photo, [style_bytes], strength=params["strength"], params=params)
        except InputError as error:
            raise ClientError(f"Cannot use that style image: {error}") from None
        return codec.encode(painted, "png"), painter.runtime

    data, backend, note = server_or_local("arbitrary", fields, files, url, local)
    return Outcome(photo, codec.decode(data), data, backend, note)
