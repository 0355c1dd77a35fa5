"""The codec's share of a request on this machine: PNG settings, JPEG and WebP, and decoding a
large JPEG for a small ``max_side``.

    .venv/bin/python -m bench.encoder            # 512x512 paintings, a 4032x3024 photo
    .venv/bin/python -m bench.encoder --quick    # fewer repeats: checks the machinery

- **Paintings**: the three measuring photos (``core.photos.measuring_photos``) painted at
  512x512 by three built styles on the engine this machine chose (``stylize.models.load``):
  what the encoder meets in serving, not photos (paintings compress differently).
- **PNG**: each setting's median time and mean size over the paintings, against the default
  (``core.codec.encode`` with no arguments). Every setting is lossless; OpenCV's encoder is
  a reference, not a candidate (the codec stays on Pillow: one encoder for every format).
  Each PNG setting also writes a flat graphic (two colours, one disc): paintings rarely hold
  runs, but a served image may, and a strategy that skips runs (Huffman only) pays there.
- **JPEG and WebP**: the codec's settings (JPEG quality 92 without chroma subsampling, WebP
  quality 92 method 2) beside the usual cheaper ones, with the mean difference to the painting.
- **Decode**: a 4032x3024 JPEG (a phone photo's size) asked for at ``max_side`` 512 and 1024:
  decoded whole then resized (what ``core.codec.decode`` does), against libjpeg's reduced-scale
  decode (Pillow ``draft``) then the same resize, with the mean difference: not adopted, since
  the networks amplify the small input difference (served pixels would no longer match a
  whole decode), measured here as a candidate.

Writes ``bench/results/encoder.json`` and ``encoder.md`` with the CPU model, flags and load.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import time
import zlib
from collections.abc import Callable
from datetime import UTC, datetime

import cv2
import numpy as np
from PIL import Image, ImageDraw

from core import codec, cpu
from core.paths import BENCH_RESULTS
from core.photos import measuring_photos, photo
from stylize.batch import Options
from stylize.models import load

STYLES = ("udnie", "wave", "scream")
SIDE = 512
Encoder = Callable[[Image.Image], bytes]


def opencv_png(level: int, strategy: int) -> Encoder:
    def encode(image: Image.Image) -> bytes:
        flags = [cv2.IMWRITE_PNG_COMPRESSION, level, cv2.IMWRITE_PNG_STRATEGY, strategy]
        return cv2.imencode(".png", np.asarray(image)[:, :, ::-1], flags)[1].tobytes()

    return encode


def pillow(fmt: str, **options) -> Encoder:
    def encode(image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, fmt, **options)
        return buffer.getvalue()

    return encode


PNG = {
    "default (level 1, run-length)": lambda image: codec.encode(image, "png"),
    "Pillow level 0 (stored)": pillow("PNG", compress_level=0),
    "Pillow level 1": pillow("PNG", compress_level=1),
    "Pillow level 4": pillow("PNG", compress_level=4),
    "Pillow level 6 (Pillow's default)": pillow("PNG", compress_level=6),
    "Pillow level 9": pillow("PNG", compress_level=9),
    "Pillow level 1, Huffman only": pillow("PNG", compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY),
    "OpenCV level 1, run-length (reference)": opencv_png(1, cv2.IMWRITE_PNG_STRATEGY_RLE),
}
LOSSY = {
    "JPEG q92 4:4:4 (the codec's)": lambda image: codec.encode(image, "jpeg", 92),
    "JPEG q85 4:2:0": pillow("JPEG", quality=85, subsampling=2),
    "WebP q92 method 2 (the codec's)": lambda image: codec.encode(image, "webp", 92),
    "WebP q92 method 0": pillow("WEBP", quality=92, method=0),
    "WebP q92 method 4": pillow("WEBP", quality=92, method=4),
    "WebP q92 method 6": pillow("WEBP", quality=92, method=6),
}


def median_ms(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def paintings() -> list[Image.Image]:
    params = Options().params()
    photos = measuring_photos(SIDE)
    painted = []
    for style in STYLES:
        painted += load(style).paint(photos, [params] * len(photos))
    return painted


def encoders(images: list[Image.Image], table: dict[str, Encoder], repeats: int, lossless: bool) -> list[dict]:
    rows = []
    for name, encode in table.items():
        times, sizes, differences = [], [], []
        for image in images:
            data = encode(image)
            back = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float32)
            difference = float(np.abs(back - np.asarray(image, np.float32)).mean())
            if lossless and difference:
                raise AssertionError(f"{name} is not lossless")
            times.append(median_ms(lambda encode=encode, image=image: encode(image), repeats))
            sizes.append(len(data))
            differences.append(difference)
        rows.append({"setting": name, "ms": statistics.mean(times), "kib": statistics.mean(sizes) / 1024,
                     "difference": statistics.mean(differences)})
    return rows


def flat_graphic() -> Image.Image:
    image = Image.new("RGB", (SIDE, SIDE), (200, 180, 150))
    ImageDraw.Draw(image).ellipse((SIDE // 5, SIDE // 5, SIDE * 4 // 5, SIDE * 4 // 5), fill=(30, 60, 90))
    return image


def flat_sizes(rows: list[dict]) -> None:
    graphic = flat_graphic()
    for row in rows:
        row["flat_kib"] = len(PNG[row["setting"]](graphic)) / 1024


def decodes(repeats: int) -> list[dict]:
    big = photo(3024, 4032)
    buffer = io.BytesIO()
    big.save(buffer, "JPEG", quality=92)
    data = buffer.getvalue()

    def whole(side: int) -> Image.Image:
        return codec.fit_max_side(codec.decode(data), side)

    def reduced_scale(size: tuple[int, int]) -> Image.Image:
        image = Image.open(io.BytesIO(data))
        image.draft("RGB", size)
        return image.convert("RGB").resize(size, Image.Resampling.LANCZOS)

    rows = []
    for side in (512, 1024):
        reference = whole(side)
        reduced = reduced_scale(reference.size)
        difference = np.abs(np.asarray(reference, np.float32) - np.asarray(reduced, np.float32)).mean()
        rows.append({"max_side": side, "whole_ms": median_ms(lambda side=side: whole(side), repeats),
                     "reduced_ms": median_ms(lambda size=reference.size: reduced_scale(size), repeats),
                     "difference": float(difference), "same_size": reference.size == reduced.size})
    return rows


def run(quick: bool) -> dict:
    load_before = os.getloadavg()
    repeats = 3 if quick else 9
    images = paintings()
    png = encoders(images, PNG, repeats, lossless=True)
    flat_sizes(png)
    return {
        "measured": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "cpu": cpu.cpu_model(),
        "cpu_flags": cpu.relevant_flags(), "cores": os.cpu_count(), "styles": STYLES, "side": SIDE,
        "paintings": len(images), "png": png,
        "lossy": encoders(images, LOSSY, repeats, lossless=False), "decode": decodes(repeats),
        "load_before": load_before, "load_after": os.getloadavg(), "quick": quick,
    }  # fmt: skip


def report(results: dict) -> str:
    loads = [" / ".join(f"{x:.1f}" for x in results[key]) for key in ("load_before", "load_after")]
    default = results["png"][0]
    lines = [
        f"# Codec: encoders and decoding ({results['cpu']}, {results['cores']} cores)", "",
        f"Measured {results['measured']} by `python -m bench.encoder`. CPU flags: {', '.join(results['cpu_flags'])}. "
        f"Load average (1/5/15 min) before: {loads[0]}, after: {loads[1]}.", "",
        f"## PNG: {results['paintings']} paintings at {results['side']}x{results['side']}", "",
        f"Styles {', '.join(results['styles'])} on three real photos; median time per painting, mean size. "
        "Every setting is lossless (checked). Last column: the same setting on a flat graphic "
        f"({results['side']}x{results['side']}, two colours, one disc).", "",
        "| setting | ms | KiB | time × default | size × default | flat graphic KiB |",
        "|---|---:|---:|---:|---:|---:|",
    ]  # fmt: skip
    for row in results["png"]:
        lines.append(f"| {row['setting']} | {row['ms']:.1f} | {row['kib']:.0f} | {row['ms'] / default['ms']:.2f} | "
                     f"{row['kib'] / default['kib']:.2f} | {row['flat_kib']:.1f} |")
    lines += ["", "## JPEG and WebP on the same paintings", "",
              "| setting | ms | KiB | mean difference to the painting (levels) |", "|---|---:|---:|---:|"]
    for row in results["lossy"]:
        lines.append(f"| {row['setting']} | {row['ms']:.1f} | {row['kib']:.0f} | {row['difference']:.2f} |")
    lines += ["", "## Decoding a 4032x3024 JPEG for a small `max_side`", "",
              "*Whole*: decoded at full size, then resized (what `core.codec.decode` does); *reduced*: libjpeg "
              "decodes at 1/2, 1/4 or 1/8 scale (Pillow `draft`), then the same resize to the same size. A "
              "candidate, not adopted: the networks amplify the small input difference, so served paintings "
              "would stop matching a whole decode pixel for pixel.", "",
              "| max_side | whole ms | reduced ms | speed-up | mean difference (levels) | same size |",
              "|---:|---:|---:|---:|---:|---|"]
    for row in results["decode"]:
        lines.append(f"| {row['max_side']} | {row['whole_ms']:.0f} | {row['reduced_ms']:.0f} | "
                     f"{row['whole_ms'] / row['reduced_ms']:.1f}× | {row['difference']:.2f} | "
                     f"{'yes' if row['same_size'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.encoder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats: checks the machinery, writes nothing")
    args = parser.parse_args(argv)
    results = run(args.quick)
    text = report(results)
    print(text)
    if not args.quick:
        BENCH_RESULTS.mkdir(parents=True, exist_ok=True)
        (BENCH_RESULTS / "encoder.json").write_text(json.dumps(results, indent=2) + "\n")
        (BENCH_RESULTS / "encoder.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
