"""What the CLI's options open: the painter (``open_stylizer``) and the batch settings.

Shared by the plain CLI (``stylize.__main__``) and ``--engine ray`` (``stylize.ray_engine``),
whose actors open their painters with this same code, so both paint the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from core import arbitrary, multistyle
from core.codec import InputError
from core.runtime_choice import RuntimeSettings
from core.video import VideoOptions
from stylize.batch import Options
from stylize.models import ModelError, load

#: ``--tile`` values -> ``load(tile=...)``: None lets the image's size decide.
TILE_CHOICES = {"auto": None, "on": True, "off": False}


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


def runtime_settings(args: argparse.Namespace) -> RuntimeSettings:
    return RuntimeSettings.from_config({
        "backend": args.backend, "precision": args.precision, "min_psnr_db": args.min_psnr_db,
        "threads": args.threads,
    })  # fmt: skip


def open_stylizer(args: argparse.Namespace, settings: RuntimeSettings):
    """The painter the options ask for; ``--engine ray`` opens its actors' painters here too."""
    return licence_clean(args, settings) or load(
        str(args.model) if args.model else args.style, args.onnx_dir, settings, TILE_CHOICES[args.tile])


def batch_options(args: argparse.Namespace) -> Options:
    video = VideoOptions(output=args.video_format, stabilize=args.stabilize)
    return Options(
        fmt=args.format, quality=args.quality, max_side=args.max_side, strength=args.strength,
        preserve_colors=args.preserve_colors, tile=TILE_CHOICES[args.tile], overwrite=args.overwrite, video=video,
    )


def report_inputs(given: Sequence[object], inputs: Sequence[object], unusable: Sequence[tuple[object, str]]) -> bool:
    """Names each unusable input on stderr (the batch goes on with the rest); False when
    nothing is left to paint, with the reason."""
    for place, reason in unusable:
        print(f"{place}: {reason}", file=sys.stderr)
    if inputs:
        return True
    if not unusable:
        print(f"error: no files in {', '.join(map(str, given))}", file=sys.stderr)
    else:
        print(f"error: none of the inputs can be read ({len(unusable)} failed)", file=sys.stderr)
    return False
