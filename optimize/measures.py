"""How far a stylized image moved toward its painting, judged without the loss network.

A style loss measured with the VGG that produced the image would grade its own homework,
so these use nothing the optimizer saw: ``colour_distance`` (per-channel 1-D Wasserstein
distance between pixel-value distributions, in 0..255 units), ``texture_distance`` (relative
Gram-matrix distance under a fixed, seeded bank of random zero-mean filters at three scales,
on luminance only: colour is the first measure's business, and filters on RGB would also
reward a mere colour shift) and
``edge_correlation`` (Pearson correlation of Sobel gradient magnitudes: does the result
keep the photo's edges?).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

#: Random filters per scale, their size, and the scales (each half the previous).
FILTERS, KERNEL, SCALES = 64, 7, 3


def colour_distance(image: Image.Image, painting: Image.Image, points: int = 128) -> float:
    """Mean over R, G, B of the distance between the two images' value distributions."""
    a = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    b = np.asarray(painting.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    q = np.linspace(0, 1, points)
    return float(np.mean([np.abs(np.quantile(a[:, c], q) - np.quantile(b[:, c], q)).mean() for c in range(3)]))


def _bank(seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    bank = torch.randn(FILTERS, 1, KERNEL, KERNEL, generator=generator)
    bank -= bank.mean(dim=(1, 2, 3), keepdim=True)  # zero-mean: blind to flat colour
    return bank / bank.flatten(1).norm(dim=1).view(-1, 1, 1, 1)


def _luminance(image: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32) / 255.0)[None, None]


def _grams(image: Image.Image, bank: torch.Tensor) -> list[torch.Tensor]:
    x = _luminance(image)
    x = x - x.mean()
    grams = []
    for _ in range(SCALES):
        found = F.relu(F.conv2d(x, bank))
        flat = found.flatten(2)[0]
        grams.append(flat @ flat.t() / flat.shape[1])
        x = F.avg_pool2d(x, 2)
    return grams


@torch.no_grad()
def texture_distance(image: Image.Image, painting: Image.Image, seed: int = 0) -> float:
    """Mean over scales of ``|G(image) - G(painting)| / |G(painting)|`` (Frobenius norms), the
    painting scaled to the image's longer side first (texture depends on scale)."""
    scale = max(image.size) / max(painting.size)
    painting = painting.resize((max(1, round(painting.width * scale)), max(1, round(painting.height * scale))),
                               Image.Resampling.LANCZOS)
    bank = _bank(seed)
    pairs = zip(_grams(image, bank), _grams(painting, bank), strict=True)
    return float(np.mean([float((a - b).norm() / b.norm()) for a, b in pairs]))


def _edges(image: Image.Image) -> np.ndarray:
    gray = F.avg_pool2d(_luminance(image), 3, stride=1, padding=1)  # a little blur: texture is not structure
    sobel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    kernels = torch.stack([sobel, sobel.t()])[:, None]
    gradient = F.conv2d(gray, kernels)
    return gradient.pow(2).sum(1).sqrt()[0].numpy().ravel()


def edge_correlation(image: Image.Image, photo: Image.Image) -> float:
    """Pearson correlation of the two images' edge strengths (``photo`` resized to ``image``)."""
    if photo.size != image.size:
        photo = photo.resize(image.size, Image.Resampling.LANCZOS)
    return float(np.corrcoef(_edges(image), _edges(photo))[0, 1])


def measure(image: Image.Image, photo: Image.Image, painting: Image.Image) -> dict[str, float]:
    """All three, rounded for reports."""
    return {
        "colour_distance": round(colour_distance(image, painting), 2),
        "texture_distance": round(texture_distance(image, painting), 4),
        "edge_correlation": round(edge_correlation(image, photo), 4),
    }
