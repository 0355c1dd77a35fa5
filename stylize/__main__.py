"""``python -m stylize INPUT... -o OUT_DIR [--style NAME | --style-image PAINTING | --model FILE]``.

``--engine ray`` runs the same batch on Ray Data, on this machine or a cluster, with inputs and
outputs in folders or object stores, resumable (``stylize.ray_engine``, docs/bulk.md).

``--style multistyle:SPEC`` picks one of the 26 Apache-2.0 styles (or a blend); ``--style-image``
(repeatable) paints in any painting's style in one pass.

Video files (MP4, MOV, WebM, MKV, AVI; told from images by their first bytes) are painted
beside the images, every frame, with their timing and sound, steadied against flicker
(``--stabilize``), into ``<name>.mp4`` (``--video-format``); docs/video.md.

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

from core.arbitrary import PARAMS as ARBITRARY_PARAMS
from core.codec import InputError, parse_format
from core.engines import BACKENDS, PRECISIONS
from core.paths import ONNX_DIR
from core.runtime_choice import SettingError
from core.style_options import PARAMS
from core.video import VIDEO_FORMATS, VideoOptions
from stylize.batch import collect_inputs, run_batch
from stylize.models import ModelError
from stylize.options import TILE_CHOICES, batch_options, open_stylizer, report_inputs, runtime_settings

DEFAULT_STYLE = "udnie"


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


def _location(text: str) -> Path | str:
    """A local path, or an object-store URL (``s3://bucket/prefix``) kept as text: a ``Path``
    would fold its ``//``. URLs are read and written by ``--engine ray`` (stylize.ray_engine)."""
    return text if "://" in text else Path(text)


def _stabilize(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within 0..1, got {value:g}")
    return value


def _format(text: str) -> str:
    try:
        return parse_format(text)
    except InputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stylize",
        description="Paint photos and videos with a fast style network. Inputs are files or folders (their "
        "visible files, not recursive); every output goes to OUT_DIR as <name>.<format> (videos: "
        "<name>.<video format>).",
        epilog="Exit status: 0 all painted (existing outputs kept count as done), 1 some inputs "
        "skipped (missing or not images: see stderr and the summary), 2 nothing attempted (arguments, "
        "model or every input missing).",
    )
    p.add_argument("inputs", nargs="+", type=_location, metavar="INPUT",
                   help="image or video file, or a folder of them (with --engine ray: images, also "
                   "s3://bucket/prefix)")
    p.add_argument("-o", "--out-dir", type=_location, required=True,
                   help="folder for the paintings (created; with --engine ray also s3://bucket/prefix)")
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
    video = p.add_argument_group("videos (docs/video.md)")
    video.add_argument("--video-format", choices=list(VIDEO_FORMATS), default=VideoOptions.output,
                       help="mp4 (default: H.264), webm (VP9) or mov (H.264); the audio is copied where it fits")
    video.add_argument("--stabilize", type=_stabilize, default=VideoOptions.stabilize,
                       help=f"0..1, how far each frame leans on the previous one against flicker (default "
                       f"{VideoOptions.stabilize:g}; 0 paints every frame alone)")
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    p.add_argument("--backend", choices=["auto", *BACKENDS], default="auto",
                   help="engine: auto (default: the fastest correct one, measured once per machine), or force one")
    p.add_argument("--precision", choices=["auto", *PRECISIONS, "fast"], default="auto",
                   help="auto (default), fp32, bf16 (CPUs with BF16), int8, fp16 (GPU), fast (opt-in: int8 and "
                        "bf16 on OpenVINO for throughput at lower quality; CPUs with VNNI or AMX)")
    p.add_argument("--min-psnr-db", type=float, help="quality floor against ONNX Runtime fp32 (default 45)")
    p.add_argument("--tile", choices=TILE_CHOICES, default="auto",
                   help="run in overlapping tiles with global statistics (same pixels, bounded memory): "
                   "auto (default) above $STYLE_TILE_THRESHOLD or 4.2 MP, on, or off")
    ray = p.add_argument_group("bulk on Ray Data (docs/bulk.md; needs requirements-ray.txt)")
    ray.add_argument("--engine", choices=["local", "ray"], default="local",
                     help="local (default): this process; ray: a pool of Ray actors, resumable, with a "
                     "manifest in OUT_DIR")
    ray.add_argument("--address", help="join this Ray cluster (e.g. auto, or ray://HEAD:10001); default: "
                     "Ray started on this machine for the job, loopback only")
    ray.add_argument("--actors", type=int, help="actors painting at once (default: as many as fit, each "
                     "taking --threads cores, or a whole node when --threads is 0)")
    ray.add_argument("--s3-endpoint", default=None,
                     help="S3-compatible service for s3:// URLs, e.g. MinIO (default $AWS_ENDPOINT_URL_S3 or "
                     "$AWS_ENDPOINT_URL, else AWS)")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None, help="always show the bar")
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show the bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.engine == "ray":
        from stylize import ray_engine

        return ray_engine.main(args)
    if urls := [str(place) for place in [*args.inputs, args.out_dir] if isinstance(place, str)]:
        print(f"error: {urls[0]}: object-store URLs need --engine ray (docs/bulk.md)", file=sys.stderr)
        return 2
    if ray_only := [f"--{name.replace('_', '-')}" for name in ("address", "actors", "s3_endpoint")
                    if getattr(args, name) is not None]:
        print(f"error: {ray_only[0]} needs --engine ray (docs/bulk.md)", file=sys.stderr)
        return 2
    inputs, unusable = collect_inputs(args.inputs)
    if not report_inputs(args.inputs, inputs, unusable):
        return 2
    try:
        stylizer = open_stylizer(args, runtime_settings(args))
    except (ModelError, SettingError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    options = batch_options(args)
    started = time.perf_counter()
    report = run_batch(inputs, args.out_dir, stylizer, options, progress=args.progress)
    report.failed[:0] = unusable
    label = f"{stylizer.model.name} on {stylizer.runtime}"
    total = len(inputs) + len(unusable)
    print(f"[{label}, {time.perf_counter() - started:.1f} s] " + report.summary(total, args.out_dir))
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
