"""The TorchServe model configs the build writes into each archive, as data.

One dict per model family; ``python -m export`` (the fast styles), ``export.styled_export``
(multistyle, arbitrary) and ``train.export`` write them as the archive's model config, and
the benchmark's test servers start from them. The Gatys model's config is computed from its
serving limits (``optimize.archive.model_config``).
"""

from __future__ import annotations

from core.settings import MAX_INPUT_PIXELS, MAX_PIXELS, RESPONSE_TIMEOUT_S, handler_default

#: TorchServe settings for each fast-style model (written as the archive's model config).
FAST_MODEL_CONFIG = {
    "minWorkers": 1,
    "maxWorkers": 1,
    # No batching: TorchServe 0.12 never answers the requests its frontend gathered for a
    # batch if the worker dies meanwhile (README, "Operating"); batchSize 1 has no such moment.
    "batchSize": 1,
    "maxBatchDelay": 1,
    # Beyond the timeout TorchServe kills the worker, so the handler's pixel limit keeps the
    # largest image it accepts well inside it, even on 2 CPU cores (README, "Performance").
    "responseTimeout": RESPONSE_TIMEOUT_S,
    # Opening a model measures the engine candidates once per machine (one model at a time,
    # core.runtime_choice): workers queued behind others need more than TorchServe's 120 s.
    "startupTimeout": 600,
    "handler": {
        "max_input_pixels": MAX_INPUT_PIXELS,
        "max_pixels": MAX_PIXELS,
        # The engine is chosen per machine by measurement (core.runtime_choice); these
        # force it. threads 0 = every core, so one request on an idle server uses the machine.
        "backend": "auto",
        "precision": "auto",
        "threads": 0,
    },
}

#: TorchServe settings for the multistyle and arbitrary models, as for the fast styles. No
#: tiling there, so the network's pixel limit is the one a whole-image call stays in memory at.
STYLED_MODEL_CONFIG = {
    "minWorkers": 1,
    "maxWorkers": 1,
    "batchSize": 1,  # no batching: see FAST_MODEL_CONFIG
    "maxBatchDelay": 1,
    "responseTimeout": RESPONSE_TIMEOUT_S,
    "startupTimeout": 600,  # see FAST_MODEL_CONFIG
    "handler": {
        "max_input_pixels": MAX_INPUT_PIXELS,
        "max_pixels": 3072 * 3072,
        "backend": "auto",
        "precision": "auto",
        "threads": 0,
    },
}
#: The arbitrary model's extra settings: style images have their own upload limit (they are
#: shrunk to ``style_size`` before the predictor) and style vectors are cached.
ARBITRARY_HANDLER = {"max_style_input_pixels": MAX_INPUT_PIXELS,
                     "style_cache_size": handler_default("arbitrary", "style_cache_size")}
