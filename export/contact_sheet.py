"""``python -m export.contact_sheet``: the 26 styles of the multistyle network on one photo.

Writes ``docs/multistyle_styles.png`` (index and name under each tile), which README shows
and the Streamlit page crops its style thumbnails from (``core.catalogue.tile_box``, the
sheet's grid). Generated from the built ``build/onnx/multistyle.onnx``, so it shows what the
server paints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnxruntime as ort
from PIL import Image, ImageDraw, ImageOps

from core import codec
from core.catalogue import CONTACT_SHEET, SHEET_COLUMNS, SHEET_LABEL, SHEET_PAD, SHEET_TILE, tile_box
from core.multistyle import NUM_STYLES, STYLE_NAMES, parse_style
from core.paths import ONNX_DIR
from core.photos import default_parity_photo


def render(model: Path, photo: Path) -> Image.Image:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    # Stylized at twice the tile size, then shrunk: the brush strokes show at tile scale.
    source = ImageOps.fit(Image.open(photo).convert("RGB"), (2 * SHEET_TILE, 2 * SHEET_TILE), Image.Resampling.LANCZOS)
    rows = -(-(NUM_STYLES + 1) // SHEET_COLUMNS)
    width = SHEET_COLUMNS * (SHEET_TILE + SHEET_PAD) + SHEET_PAD
    height = rows * (SHEET_TILE + SHEET_LABEL + SHEET_PAD) + SHEET_PAD
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    tiles = [("photo", source)]
    for index in range(NUM_STYLES):
        out = session.run(None, {"image": codec.to_array(source)[None], "style_weights": parse_style(index)})[0][0]
        tiles.append((f"{index} {STYLE_NAMES[index]}", codec.from_array(out)))
    for n, (label, image) in enumerate(tiles):
        x0, y0, _, _ = tile_box(n - 1)
        sheet.paste(image.resize((SHEET_TILE, SHEET_TILE), Image.Resampling.LANCZOS), (x0, y0))
        draw.text((x0 + 1, y0 + SHEET_TILE + 1), label, fill="black")
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.contact_sheet", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ONNX_DIR / "multistyle.onnx")
    # A public-domain photo (US Navy, shipped with matplotlib), so the sheet can be published.
    parser.add_argument("--photo", type=Path, default=default_parity_photo())
    parser.add_argument("--out", type=Path, default=CONTACT_SHEET)
    args = parser.parse_args(argv)
    sheet = render(args.model, args.photo)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours: a much smaller file, and the tiles are thumbnails anyway.
    sheet.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(args.out, optimize=True)
    print(f"{args.out}: {sheet.size[0]}x{sheet.size[1]}, {args.out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
