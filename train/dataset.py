"""Training images: any folder of photos (COCO 2014 train is the reference) and one style image.

Every file goes through ``core.codec`` -- the same decoding, EXIF orientation and
colour handling as the served models -- and torchvision's transforms do the geometry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2

from core import codec

#: File endings picked up from the dataset folder (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")


def read_image(path: Path, max_side: int | None = None) -> Image.Image:
    """Decodes one file through the project codec; the error names the file."""
    try:
        return codec.decode(Path(path).read_bytes(), max_side=max_side)
    except codec.InputError as error:
        raise ValueError(f"{path}: {error}") from None


def to_tensor(image: Image.Image) -> torch.Tensor:
    """RGB image -> float32 ``[3, H, W]`` in ``[0, 255]`` (the TransformerNet range)."""
    return torch.from_numpy(codec.to_array(image))


class ContentImages(Dataset):
    """Every image under ``root`` (recursively), resized and centre-cropped to a square.

    The file list is sorted, so each DDP rank sees the same indices in the same order and
    ``DistributedSampler`` can split them without overlap. ``augment`` takes a random crop
    (of a slightly larger resize) and flips half the images: a few photos then still show
    the network many views. Off by default, so a resumed run sees exactly the same pixels.
    """

    def __init__(self, root: Path, size: int = 256, augment: bool = False):
        self.root = Path(root)
        self.files = sorted(p for p in self.root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.files:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {self.root}")
        if augment:
            self.geometry = v2.Compose([v2.Resize(round(size * 1.5)), v2.RandomCrop(size), v2.RandomHorizontalFlip()])
        else:
            self.geometry = v2.Compose([v2.Resize(size), v2.CenterCrop(size)])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return to_tensor(self.geometry(read_image(self.files[index])))


def load_style_image(path: Path, size: int | None = None) -> torch.Tensor:
    """The style image as ``[1, 3, H, W]``; ``size`` resizes its shorter side (None: as is).

    The style size sets the scale of the brush strokes the network learns."""
    image = read_image(path)
    if size is not None:
        image = v2.Resize(size)(image)
    return to_tensor(image)[None]
