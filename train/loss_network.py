"""The frozen loss network: a VGG feature stack, its verified ImageNet weights, named taps.

Perceptual losses only mean something with the exact ImageNet weights, so the rules of
``optimize.vgg`` apply here too: the file is looked up (``--loss-weights``, then
``$STYLE_VGG16_WEIGHTS`` / ``$STYLE_VGG19_WEIGHTS``, then the torch hub cache), never
downloaded, its SHA-256 is checked against the prefix in torchvision's file name, and a
missing or wrong file is a ``VGGWeightsMissing`` error that says how to supply it. Random
weights are never a fallback: only ``random_features`` (tests, timing) builds them, and
the CLI reaches it only through ``--random-loss-network-for-tests``.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG16_Weights, VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

from optimize.vgg import IMAGENET_MEAN, IMAGENET_STD, VGGWeightsMissing, layer_names, randomize

__all__ = ["ARCHITECTURES", "FeatureTaps", "VGGWeightsMissing", "load_features", "random_features"]


@dataclass(frozen=True)
class Architecture:
    """One torchvision VGG variant: its layer configuration and its ImageNet release file."""

    name: str
    config: list
    weights: VGG16_Weights | VGG19_Weights
    env: str  # environment variable that may point at the weights file

    @property
    def file_name(self) -> str:  # e.g. "vgg16-397923af.pth"
        return self.weights.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:  # torchvision names files <arch>-<first 8 hex of sha256>
        return self.file_name.rsplit("-", 1)[-1].split(".")[0]

    @property
    def layer_names(self) -> list[str]:
        return layer_names(self.config)


ARCHITECTURES = {
    "vgg16": Architecture("vgg16", cfgs["D"], VGG16_Weights.IMAGENET1K_V1, "STYLE_VGG16_WEIGHTS"),
    "vgg19": Architecture("vgg19", cfgs["E"], VGG19_Weights.IMAGENET1K_V1, "STYLE_VGG19_WEIGHTS"),
}


def how_to_supply(arch: Architecture) -> str:
    cache = Path(torch.hub.get_dir()) / "checkpoints" / arch.file_name
    return (
        f"Supply torchvision's ImageNet {arch.name.upper()} weights ({arch.file_name}, {arch.weights.url}): "
        f"put the file at {cache} ($TORCH_HOME/hub/checkpoints; e.g. run `python -c 'import torchvision; "
        f"torchvision.models.{arch.name}(weights=\"IMAGENET1K_V1\")'` on a machine with internet and copy it), "
        f"or pass --loss-weights PATH, or set {arch.env}=PATH. Its SHA-256 must start with {arch.sha256_prefix}."
    )


def find_weights(arch: Architecture, path: Path | None = None) -> Path:
    """The weights file to load: ``path``, else ``$<env>``, else the torch hub cache. Never downloads."""
    configured = path or (Path(os.environ[arch.env]).expanduser() if os.environ.get(arch.env) else None)
    found = configured or Path(torch.hub.get_dir()) / "checkpoints" / arch.file_name
    if not found.is_file():
        raise VGGWeightsMissing(f"{arch.name.upper()} weights not found at {found}. {how_to_supply(arch)}")
    return found


def verify_checksum(arch: Architecture, path: Path) -> None:
    """torchvision's convention: the file's SHA-256 starts with the hash in its name. No opt-out."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(arch.sha256_prefix):
        raise VGGWeightsMissing(
            f"{path} is not torchvision's ImageNet {arch.name.upper()} file: its SHA-256 is "
            f"{digest.hexdigest()[:16]}..., expected a prefix of {arch.sha256_prefix}. {how_to_supply(arch)}"
        )


def load_features(arch_name: str, path: Path | None = None) -> nn.Sequential:
    """The verified ImageNet feature stack of ``arch_name`` on the CPU; raises ``VGGWeightsMissing``."""
    arch = ARCHITECTURES[arch_name]
    path = find_weights(arch, path)
    verify_checksum(arch, path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:
        raise VGGWeightsMissing(f"cannot read {path} ({error}). {how_to_supply(arch)}") from None
    features = make_layers(arch.config, batch_norm=False)
    # The release also holds the classifier; only the convolutional stack is used.
    features.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
    return features


def random_features(arch_name: str, seed: int = 0) -> nn.Sequential:
    """TEST-ONLY: the architecture with seeded random weights. Not style transfer."""
    return randomize(make_layers(ARCHITECTURES[arch_name].config, batch_norm=False), seed)


class FeatureTaps(nn.Module):
    """The feature stack cut after the deepest requested layer; returns activations by name.

    Takes RGB in ``[0, 255]`` (the TransformerNet range) and applies the ImageNet
    normalization itself. Frozen and in eval mode: only the transformer learns.
    """

    def __init__(self, arch_name: str, features: nn.Sequential, layers: Iterable[str]):
        super().__init__()
        names = ARCHITECTURES[arch_name].layer_names
        wanted = set(layers)
        unknown = sorted(wanted - set(names))
        if unknown or not wanted:
            raise ValueError(f"unknown {arch_name} layer(s) {unknown}; known: {', '.join(names)}")
        self.layers = sorted(wanted, key=names.index)
        depth = names.index(self.layers[-1]) + 1
        # torchvision's ReLUs are in-place; a tapped activation must not be overwritten.
        modules = [nn.ReLU() if isinstance(m, nn.ReLU) else m for m in list(features)[:depth]]
        self.stack = nn.Sequential(*modules)
        self.names = names[:depth]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255.0)
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        found = {}
        for name, module in zip(self.names, self.stack, strict=True):
            x = module(x)
            if name in self.layers:
                found[name] = x
        return found
