"""``python -m export.contact_sheet``: the 26 styles of the multistyle network on one photo.

Writes ``docs/multistyle_styles.png`` (index and name under each tile), which README shows
and the Streamlit page crops its style thumbnails from (``tile_box``). Generated from the
built ``build/onnx/multistyle.onnx``, so it shows what the server paints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import onnxruntime as ort
from PIL import Image, ImageDraw, ImageOps

from core import codec
from core.multistyle import NUM_STYLES, STYLE_NAMES, parse_style
from core.paths import ONNX_DIR, ROOT
from core.photos import default_parity_photo

SHEET = ROOT / "docs" / "multistyle_styles.png"
TILE = 128
COLUMNS = 7
LABEL = 14
PAD = 4


def tile_box(index: int) -> tuple[int, int, int, int]:
    """Where style ``index``'s tile is on the sheet (tile 0 is the photo itself)."""
    row, column = divmod(index + 1, COLUMNS)
    x, y = PAD + column * (TILE + PAD), PAD + row * (TILE + LABEL + PAD)
    return x, y, x + TILE, y + TILE


def render(model: Path, photo: Path) -> Image.Image:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    # Stylized at twice the tile size, then shrunk: the brush strokes show at tile scale.
    source = ImageOps.fit(Image.open(photo).convert("RGB"), (2 * TILE, 2 * TILE), Image.Resampling.LANCZOS)
    rows = -(-(NUM_STYLES + 1) // COLUMNS)
    sheet = Image.new("RGB", (COLUMNS * (TILE + PAD) + PAD, rows * (TILE + LABEL + PAD) + PAD), "white")
    draw = ImageDraw.Draw(sheet)
    tiles = [("photo", source)]
    for index in range(NUM_STYLES):
        out = session.run(None, {"image": codec.to_array(source)[None], "style_weights": parse_style(index)})[0][0]
        tiles.append((f"{index} {STYLE_NAMES[index]}", codec.from_array(out)))
    for n, (label, image) in enumerate(tiles):
        x0, y0, _, _ = tile_box(n - 1)
        sheet.paste(image.resize((TILE, TILE), Image.Resampling.LANCZOS), (x0, y0))
        draw.text((x0 + 1, y0 + TILE + 1), label, fill="black")
    return sheet


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.contact_sheet", description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=ONNX_DIR / "multistyle.onnx")
    # A public-domain photo (US Navy, shipped with matplotlib), so the sheet can be published.
    parser.add_argument("--photo", type=Path, default=default_parity_photo())
    parser.add_argument("--out", type=Path, default=SHEET)
    args = parser.parse_args(argv)
    sheet = render(args.model, args.photo)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # 256 colours: a much smaller file, and the tiles are thumbnails anyway.
    sheet.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(args.out, optimize=True)
    print(f"{args.out}: {sheet.size[0]}x{sheet.size[1]}, {args.out.stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
