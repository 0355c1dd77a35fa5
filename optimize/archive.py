"""Builds ``gatys.mar``: the handler, the ``optimize`` and ``core`` packages, and a model config.

The archive holds no weights: VGG19 is looked up on the serving machine at load time (see
``optimize.vgg``), so the .mar stays small and the 548 MB ImageNet file is never duplicated.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import yaml

from export.archive import ROOT, package
from optimize.serving import ServingLimits

MODEL_NAME = "gatys"
#: Seconds TorchServe waits for the worker's answer before killing it. Five minutes: long
#: enough for ~100 L-BFGS iterations at 256 px on 2 CPU cores (about 1.4 s each), short
#: enough that a stuck worker is noticed. The handler stops optimizing ``response_margin_s``
#: earlier and returns the best image so far, so a request never meets this limit.
RESPONSE_TIMEOUT_S = 300


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
        "responseTimeout": RESPONSE_TIMEOUT_S,
        "handler": handler,
    }


def build(out_dir: Path) -> Path:
    """Writes ``out_dir/gatys.mar`` and returns its path."""
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "model-config.yaml"
        config.write_text(yaml.safe_dump(model_config(), sort_keys=False))
        return package(
            name=MODEL_NAME,
            handler=ROOT / "handlers" / "gatys.py",
            model_file=None,
            extra=[ROOT / "optimize"],
            config=config,
            out_dir=Path(out_dir),
        )


if __name__ == "__main__":
    import sys

    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "model_store"))
