"""The loss network: torchvision's VGG19 feature stack, its ImageNet weights, and where they live.

Architecture, weights metadata and input normalization sit together here, as in torchvision's
``models/vgg.py``: the Gatys losses are only meaningful with the exact ImageNet weights, so the
file is looked up (never downloaded by the server), its checksum is verified, and a missing or
wrong file is an explicit ``VGGWeightsMissing`` error carrying the fix. There is no silent
fallback to random weights: tests ask for them by name (``random_vgg19_features``) or write a
random file (``write_random_weights``) and opt in to loading it with an environment variable
that exists for tests only (``STYLE_VGG19_ALLOW_UNVERIFIED=1``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn
from torchvision.models import VGG19_Weights
from torchvision.models.vgg import cfgs, make_layers

log = logging.getLogger(__name__)

#: The torchvision release file; its name carries the first 8 hex digits of its SHA-256.
WEIGHTS = VGG19_Weights.IMAGENET1K_V1
WEIGHTS_FILE = WEIGHTS.url.rsplit("/", 1)[-1]  # "vgg19-dcbb9e9d.pth"
WEIGHTS_SHA256_PREFIX = WEIGHTS_FILE.rsplit("-", 1)[-1].split(".")[0]  # "dcbb9e9d"
#: Path to a weights file (e.g. a local mirror), used instead of the torch hub cache.
ENV_WEIGHTS = "STYLE_VGG19_WEIGHTS"
#: TEST-ONLY: "1" accepts a weights file whose checksum does not match (random weights).
ENV_ALLOW_UNVERIFIED = "STYLE_VGG19_ALLOW_UNVERIFIED"
#: The environment a test server needs, besides ``STYLE_VGG19_WEIGHTS``, to load a file
#: written by ``write_random_weights``. Never set this in production.
TEST_OPT_IN_ENV = {ENV_ALLOW_UNVERIFIED: "1"}

#: ImageNet statistics the weights were trained with; inputs are RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def layer_names(config: list) -> list[str]:
    """Names every module of the VGG feature stack the way the papers do: conv1_1, relu1_1, ...
    pool1, conv2_1, ... so layer lists read like Gatys et al. instead of indices."""
    names, block, index = [], 1, 1
    for item in config:
        if item == "M":
            names.append(f"pool{block}")
            block, index = block + 1, 1
        else:
            names += [f"conv{block}_{index}", f"relu{block}_{index}"]
            index += 1
    return names


VGG19_CONFIG = cfgs["E"]
LAYER_NAMES: list[str] = layer_names(VGG19_CONFIG)


class VGGWeightsMissing(RuntimeError):
    """The ImageNet VGG19 weights are absent or wrong; the message says how to supply them."""


def how_to_supply() -> str:
    return (
        f"Supply torchvision's ImageNet VGG19 weights ({WEIGHTS_FILE}, {WEIGHTS.url}): either put the "
        f"file at {default_cache_path()} ($TORCH_HOME/hub/checkpoints; e.g. run "
        "`python -c 'import torchvision; torchvision.models.vgg19(weights=\"IMAGENET1K_V1\")'` "
        f"on a machine with internet and copy the file), or set {ENV_WEIGHTS}=/path/to/{WEIGHTS_FILE}. "
        f"The file's SHA-256 must start with {WEIGHTS_SHA256_PREFIX}."
    )


def default_cache_path() -> Path:
    """Where torchvision's weights API caches the file (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / WEIGHTS_FILE


def find_weights() -> Path:
    """Returns the weights file to load: ``$STYLE_VGG19_WEIGHTS`` if set, else the torch cache.

    Only looks; never downloads, so a request can never stall on the network.
    """
    configured = os.environ.get(ENV_WEIGHTS)
    path = Path(configured).expanduser() if configured else default_cache_path()
    if not path.is_file():
        origin = f"{ENV_WEIGHTS}={configured}" if configured else "the torch hub cache"
        raise VGGWeightsMissing(f"VGG19 weights not found at {path} (from {origin}). {how_to_supply()}")
    return path


def verify_checksum(path: Path) -> None:
    """Checks torchvision's convention: the file's SHA-256 starts with the hash in its name."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    actual = digest.hexdigest()
    if actual.startswith(WEIGHTS_SHA256_PREFIX):
        return
    if os.environ.get(ENV_ALLOW_UNVERIFIED) == "1":
        log.warning(
            "LOADING UNVERIFIED VGG19 WEIGHTS from %s (sha256 %s...) because %s=1. This is for tests "
            "only: results are not style transfer unless these are the ImageNet weights.",
            path, actual[:12], ENV_ALLOW_UNVERIFIED,
        )
        return
    raise VGGWeightsMissing(
        f"{path} is not torchvision's ImageNet VGG19 file: its SHA-256 is {actual[:16]}..., expected a "
        f"prefix of {WEIGHTS_SHA256_PREFIX}. {how_to_supply()}"
    )


def build_features() -> nn.Sequential:
    """The VGG19 convolutional stack (torchvision's layout, so its state_dict keys match)."""
    return make_layers(VGG19_CONFIG, batch_norm=False)


def load_vgg19_features(path: Path | None = None) -> nn.Sequential:
    """Loads the verified ImageNet VGG19 feature stack on the CPU; raises ``VGGWeightsMissing``."""
    path = path or find_weights()
    verify_checksum(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:  # a corrupt or foreign file
        message = f"cannot read VGG19 weights from {path} ({error}). {how_to_supply()}"
        raise VGGWeightsMissing(message) from None
    features = build_features()
    # The release holds the classifier too; only the convolutional stack is needed.
    own = {key.removeprefix("features."): value for key, value in state.items()
           if key.startswith("features.")}
    try:
        features.load_state_dict(own)
    except RuntimeError as error:
        raise VGGWeightsMissing(f"{path} does not hold VGG19 weights ({error}). {how_to_supply()}") from None
    return features


def random_vgg19_features(seed: int = 0) -> nn.Sequential:
    """The same architecture with random weights, for tests and timing only."""
    return randomize(build_features(), seed)


def randomize(features: nn.Sequential, seed: int = 0) -> nn.Sequential:
    """Seeded random weights in place, as torchvision initializes VGG (Kaiming normal,
    fan-out), so activations keep a workable scale through 16 convolutions. Tests only."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in features.modules():
            if isinstance(module, nn.Conv2d):
                fan_out = module.out_channels * module.kernel_size[0] * module.kernel_size[1]
                module.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                module.bias.zero_()
    return features


def write_random_weights(path: Path, seed: int = 0) -> Path:
    """Writes a random VGG19 state_dict (``features.*`` keys, like the release) for tests.

    Loading it needs ``STYLE_VGG19_ALLOW_UNVERIFIED=1`` because its checksum cannot match.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"features.{key}": value for key, value in random_vgg19_features(seed).state_dict().items()}
    torch.save(state, path)
    return path


class LossNetwork(nn.Module):
    """VGG19 cut after the deepest requested layer; returns the requested activations by name.

    Takes RGB in [0, 1] and applies the ImageNet normalization itself. Frozen and in eval
    mode: only the image being optimized receives gradients.
    """

    def __init__(self, features: nn.Sequential, layers: Iterable[str]):
        super().__init__()
        layers = set(layers)
        unknown = sorted(layers - set(LAYER_NAMES))
        if unknown or not layers:
            raise ValueError(f"unknown VGG19 layer(s) {unknown}; known: {', '.join(LAYER_NAMES)}")
        self.layers = sorted(layers, key=LAYER_NAMES.index)
        depth = LAYER_NAMES.index(self.layers[-1]) + 1
        stack = []
        for module in list(features)[:depth]:
            # torchvision's ReLUs are in-place; a captured activation must not be overwritten.
            stack.append(nn.ReLU(inplace=False) if isinstance(module, nn.ReLU) else module)
        self.stack = nn.Sequential(*stack)
        self.names = LAYER_NAMES[:depth]
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (image - self.mean) / self.std
        wanted = set(self.layers)
        out = {}
        for name, module in zip(self.names, self.stack, strict=True):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out
