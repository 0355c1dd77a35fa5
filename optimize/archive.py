"""Builds ``gatys.mar``: the handler, the packages it runs (``optimize``, ``lossnet``, ``core``)
and a model config.

The archive holds no weights: the loss networks are looked up on the serving machine at load
time (see ``lossnet.weights``), so the .mar stays small and a 548 MB ImageNet file is never
duplicated. Only modules the server runs are packed: this builder and the CLI stay out.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
from pathlib import Path

import yaml

from core.settings import RESPONSE_TIMEOUT_S
from optimize.serving import ServingLimits

ROOT = Path(__file__).resolve().parents[1]
MODEL_NAME = "gatys"
HANDLER = ROOT / "handlers" / "gatys.py"
#: What the served model imports besides ``core`` (which every archive carries).
PACKAGES = (ROOT / "optimize", ROOT / "lossnet")
#: Build and command-line modules of those packages: never run by the server.
NOT_SERVED = ("archive.py", "__main__.py")


def model_config(limits: ServingLimits | None = None) -> dict:
    """One worker, batch size 1: an optimization occupies the device fully, and a second
    worker would only halve the speed of both (and double the memory)."""
    limits = limits or ServingLimits()
    handler = dataclasses.asdict(limits)
    handler["time_budget_s"] = min(limits.time_budget_s, RESPONSE_TIMEOUT_S - limits.response_margin_s)
    return {
        "minWorkers": 1,
        "maxWorkers": 1,
        "batchSize": 1,
        "maxBatchDelay": 0,
        # As for every model: long enough for a hundred L-BFGS iterations at 256 px on a
        # 2-core CPU. The service stops ``response_margin_s`` earlier and returns the best
        # image so far, so a request never meets it.
        "responseTimeout": RESPONSE_TIMEOUT_S,
        # Workers load one after another behind the fast styles' runtime measurement.
        "startupTimeout": 600,
        "handler": handler,
    }


def stage(folder: Path) -> list[Path]:
    """Copies the served packages into ``folder`` (without ``NOT_SERVED`` and caches) and
    writes the model config there; returns the package folders and the config path."""
    staged = []
    for package in PACKAGES:
        target = folder / package.name
        shutil.copytree(package, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", *NOT_SERVED))
        staged.append(target)
    config = folder / "model-config.yaml"
    config.write_text(yaml.safe_dump(model_config(), sort_keys=False))
    return [*staged, config]


def build(out_dir: Path) -> Path:
    """Writes ``out_dir/gatys.mar`` and returns its path, through the archiver every model's
    build uses."""
    # Imported here: the container image copies optimize/ (model_config included) without the build tools.
    from build_tools.archive import package

    with tempfile.TemporaryDirectory() as tmp:
        *packages, config = stage(Path(tmp))
        return package(name=MODEL_NAME, handler=HANDLER, model_file=None, extra=packages, config=config,
                       out_dir=Path(out_dir))


if __name__ == "__main__":
    import sys

    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "model_store"))
