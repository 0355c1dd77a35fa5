"""Shared fixtures: the real photos, the built model store, one TorchServe for the session.

The server uses the project's own config.properties (rendered with free loopback ports)
and every archive in model_store/, which ``scripts/build.sh`` builds from the real
trained weights before the tests run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import ts
from PIL import Image
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

from server.launch import ROOT, Server, free_ports

SHARED = Path(os.environ.get("STYLE_SHARED_DIR", ROOT.parent / "shared"))
MODEL_STORE = ROOT / "model_store"
ONNX_DIR = ROOT / "build" / "onnx"
DEFAULT_STYLES = ("la_muse", "rain_princess", "scream", "udnie", "wave", "wreck")


def ts_metrics() -> MetricsCacheYamlImpl:
    """TorchServe's own metrics cache, as a worker builds it, so handler metric calls are real."""
    metrics = MetricsCacheYamlImpl(config_file_path=str(Path(ts.__file__).parent / "configs" / "metrics.yaml"))
    metrics.initialize_cache()
    return metrics


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
    """Gatys needs VGG19 weights; none can be had here, so the test server gets a
    random-weight VGG19 file, explicitly marked as unverified test weights."""
    try:
        from optimize import vgg
    except ImportError:
        return {}
    path = vgg.write_random_weights(runtime / "vgg19-random.pth", seed=0)
    return {"STYLE_VGG19_WEIGHTS": str(path), **getattr(vgg, "TEST_OPT_IN_ENV", {})}


@pytest.fixture(scope="session")
def server(built_store, tmp_path_factory):
    runtime = tmp_path_factory.mktemp("torchserve")
    instance = Server(runtime, built_store, free_ports(), env=_gatys_env(runtime))
    instance.start()
    try:
        instance.wait_ready(timeout=300)
        yield instance
    finally:
        instance.stop()
