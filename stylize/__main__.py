"""``python -m stylize INPUT... -o OUT_DIR [--style NAME | --style-image PAINTING | --model FILE]``.

``--style multistyle:SPEC`` picks one of the 26 Apache-2.0 styles (or a blend); ``--style-image``
(repeatable) paints in any painting's style in one pass.

Exit codes: 0 every input was painted (or its output already existed and was kept);
1 some inputs were skipped (missing, unreadable, not an image, too large), each named on stderr
as it happens and listed in the summary;
2 nothing was attempted (bad arguments, model missing, no usable inputs).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from core import arbitrary, multistyle
from core.arbitrary import PARAMS as ARBITRARY_PARAMS
from core.codec import InputError, parse_format
from core.engines import BACKENDS, PRECISIONS
from core.paths import ONNX_DIR
from core.runtime_choice import RuntimeSettings, SettingError
from core.style_options import PARAMS
from stylize.batch import Options, collect_inputs, run_batch
from stylize.models import ModelError, load

DEFAULT_STYLE = "udnie"
#: ``--tile`` values -> ``load(tile=...)``: None lets the image's size decide.
TILE_CHOICES = {"auto": None, "on": True, "off": False}


def _param(name: str):
    """An argparse type that validates like the HTTP parameter of the same name."""
    def parse(text: str):
        try:
            return PARAMS[name].parse(name, text)
        except InputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = name  # argparse names the type in its error message
    return parse


def _style_weights(text: str) -> list[float]:
    try:
        return ARBITRARY_PARAMS["style_weights"].parse("style_weights", text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def licence_clean(args: argparse.Namespace, settings: RuntimeSettings):
    """``--style multistyle[:SPEC]`` or ``--style-image``: the licence-clean models, which run
    whole images (no tiling); None for any other style."""
    if not args.style_image and args.style.partition(":")[0] != "multistyle":
        return None
    if TILE_CHOICES[args.tile]:
        raise ModelError("--tile on: the multistyle and arbitrary models run whole images (no tiling)")
    needed = ["arbitrary_transform.onnx", "arbitrary_predict.onnx"] if args.style_image else ["multistyle.onnx"]
    if missing := [name for name in needed if not (args.onnx_dir / name).is_file()]:
        raise ModelError(f"{args.onnx_dir / missing[0]} not found: run scripts/build.sh first")
    if not args.style_image:
        try:
            weights = multistyle.parse_style(args.style.partition(":")[2] or None)
        except InputError as error:
            raise ModelError(f"--style {args.style}: {error}; other ways to give a style: --style NAME (a built "
                             "style), --style-image PAINTING (any painting)") from None
    try:
        if args.style_image:
            painter = arbitrary.ArbitraryStylizer.open(args.onnx_dir, settings)
            styles = [path.read_bytes() for path in args.style_image]
            return arbitrary.FixedStylePainter(painter, styles, args.style_weights, args.style_size)
        return multistyle.MultistylePainter(multistyle.open_stylizer(args.onnx_dir / "multistyle.onnx", settings),
                                            weights)
    except InputError as error:  # a bad painting
        raise ModelError(str(error)) from None
    except OSError as error:  # a painting that cannot be read
        raise ModelError(str(error)) from None


def _format(text: str) -> str:
    try:
        return parse_format(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stylize",
        description="Paint photos with a fast style network. Inputs are files or folders (their "
        "visible files, not recursive); every output goes to OUT_DIR as <name>.<format>.",
        epilog="Exit status: 0 all painted (existing outputs kept count as done), 1 some inputs "
        "skipped (missing or not images: see stderr and the summary), 2 nothing attempted (arguments, "
        "model or every input missing).",
    )
    p.add_argument("inputs", nargs="+", type=Path, metavar="INPUT", help="image file or folder of images")
    p.add_argument("-o", "--out-dir", type=Path, required=True, help="folder for the paintings (created)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("-s", "--style", default=DEFAULT_STYLE,
                       help=f"built style name (default {DEFAULT_STYLE}); its build/onnx/<style>.onnx is used; "
                       "or multistyle:SPEC, one of the 26 Apache-2.0 styles (SPEC: 0-25, a name, or 3:0.5,12:0.5)")
    which.add_argument("--style-image", type=Path, action="append",
                       help="any painting as the style, in one pass (the Apache-2.0 arbitrary model); repeat to blend")
    which.add_argument("-m", "--model", type=Path,
                       help="a .onnx (our layout or <style>.uint8.onnx) or a TransformerNet .pth state dict")
    p.add_argument("--onnx-dir", type=Path, default=ONNX_DIR, help="where built styles live")
    p.add_argument("--style-weights", type=_style_weights, help="blend weights of the --style-image paintings: 0.7,0.3")
    p.add_argument("--style-size", type=int, default=256, help="side a --style-image is read at (default 256)")
    p.add_argument("--max-side", type=_param("max_side"), help="downscale so the longer side is at most this")
    p.add_argument("--strength", type=_param("strength"), default=1.0, help="1 = painting, 0 = the photo")
    p.add_argument("--preserve-colors", action="store_true", help="keep the photo's colours")
    p.add_argument("--format", type=_format, default="png", help="png (default), jpeg or webp")
    p.add_argument("--quality", type=_param("quality"), default=92, help="JPEG/WebP quality (default 92)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    p.add_argument("--backend", choices=["auto", *BACKENDS], default="auto",
                   help="engine: auto (default: the fastest correct one, measured once per machine), or force one")
    p.add_argument("--precision", choices=["auto", *PRECISIONS], default="auto",
                   help="auto (default), fp32, bf16 (CPUs with BF16), int8, fp16 (GPU)")
    p.add_argument("--min-psnr-db", type=float, help="quality floor against ONNX Runtime fp32 (default 45)")
    p.add_argument("--tile", choices=TILE_CHOICES, default="auto",
                   help="run in overlapping tiles with global statistics (same pixels, bounded memory): "
                   "auto (default) above $STYLE_TILE_THRESHOLD or 4.2 MP, on, or off")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show the bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show the bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    inputs, unusable = collect_inputs(args.inputs)
    for path, reason in unusable:  # named now; the batch goes on with the rest
        print(f"{path}: {reason}", file=sys.stderr)
    if not inputs:
        if not unusable:
            print(f"error: no files in {', '.join(map(str, args.inputs))}", file=sys.stderr)
        else:
            print(f"error: none of the inputs can be read ({len(unusable)} failed)", file=sys.stderr)
        return 2
    try:
        settings = RuntimeSettings.from_config({
            "backend": args.backend, "precision": args.precision, "min_psnr_db": args.min_psnr_db,
            "threads": args.threads,
        })  # fmt: skip
        stylizer = licence_clean(args, settings) or load(
            str(args.model) if args.model else args.style, args.onnx_dir, settings, TILE_CHOICES[args.tile])
    except (ModelError, SettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = Options(
        fmt=args.format, quality=args.quality, max_side=args.max_side, strength=args.strength,
        preserve_colors=args.preserve_colors, tile=TILE_CHOICES[args.tile], overwrite=args.overwrite,
    )
    started = time.perf_counter()
    report = run_batch(inputs, args.out_dir, stylizer, options, progress=args.progress)
    report.failed[:0] = unusable
    label = f"{stylizer.model.name} on {stylizer.runtime}"
    total = len(inputs) + len(unusable)
    print(f"[{label}, {time.perf_counter() - started:.1f} s] " + report.summary(total, args.out_dir))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
