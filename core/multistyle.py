"""The 26-style network's requests: which style (or blend) a request asks for, as graph input.

A style is given as an index (``"19"``), a name (``"starry_swirl"``, see ``STYLE_NAMES``), a
blend of either (``"3:0.5,12:0.5"``), or 26 numbers (``style_weights``). Whatever the form,
``parse_style`` returns the weights the graph's ``style_weights`` input takes: non-negative,
summing to 1. Shared by the fast-style service (``core.fast_service``), the CLI and the app.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from core.codec import Limits
from core.errors import InputError
from core.request import Param
from core.style_options import PARAMS as FAST_PARAMS

NUM_STYLES = 26
#: The graph input holding the blend.
STYLE_INPUT = "style_weights"
#: Descriptive names for the 26 styles (the weights come with none), by index, chosen by
#: looking at each style on a photo (docs/multistyle_styles.png).
STYLE_NAMES = (
    "ochre_brushwork", "yellow_outlines", "pencil_sketch", "vivid_shards", "red_expressionist", "warm_mosaic",
    "blue_bubbles", "dark_bold_blocks", "pastel_lines", "teal_red_weave", "warm_brown", "beige_etching",
    "blue_violet_haze", "green_fauvist", "pale_blue_wash", "pastel_stained_glass", "blue_gold_strokes",
    "red_blue_grid", "sepia_sketch", "blue_swirls", "fiery_red", "bold_patches", "grey_charcoal",
    "murky_green", "blue_ink_lines", "dense_tapestry",
)
#: The multistyle endpoint's parameters: the fast-style ones plus the style.
PARAMS = {
    **FAST_PARAMS,
    "style": Param(str, None, help="index 0-25, a name, or a blend like 3:0.5,12:0.5 (default 0)"),
    "style_weights": Param(list, None, help="26 non-negative numbers, normalised to sum 1"),
}


def _index(token: str, spec: str) -> int:
    token = token.strip()
    if token in STYLE_NAMES:
        return STYLE_NAMES.index(token)
    try:
        index = int(token)
    except ValueError:
        raise InputError(
            f"style {spec!r}: {token!r} is neither an index 0-{NUM_STYLES - 1} nor a style name "
            f"(e.g. {STYLE_NAMES[19]}); blends look like 3:0.5,12:0.5"
        ) from None
    if not 0 <= index < NUM_STYLES:
        raise InputError(f"style {spec!r}: index {index} is out of range 0-{NUM_STYLES - 1}")
    return index


def _normalised(weights: np.ndarray, spec: Any) -> np.ndarray:
    if not np.all(np.isfinite(weights)):
        raise InputError(f"style {spec!r}: weights must be finite numbers")
    if (weights < 0).any():
        raise InputError(f"style {spec!r}: weights must be non-negative")
    if weights.sum() <= 0:
        raise InputError(f"style {spec!r}: weights must not all be zero")
    return (weights / weights.sum()).astype(np.float32)


def parse_style(spec: str | int | Sequence[float] | Mapping[int | str, float] | None) -> np.ndarray:
    """A style spec -> ``float32 [26]`` weights summing to 1; ``InputError`` naming the problem.

    ``None`` is style 0; an int or ``"7"`` or a name is one style; ``"3:0.5,12:0.5"`` a blend
    (a repeated style adds up); a mapping ``{index or name: weight}`` likewise; a sequence
    must have 26 numbers."""
    weights = np.zeros(NUM_STYLES, np.float64)
    if spec is None:
        weights[0] = 1.0
    elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool):
        weights[_index(str(spec), str(spec))] = 1.0
    elif isinstance(spec, str):
        parts = [part for part in spec.split(",") if part.strip()]
        if not parts:
            raise InputError("style is empty: give an index 0-25, a name, or a blend like 3:0.5,12:0.5")
        for part in parts:
            token, colon, amount = part.partition(":")
            try:
                weight = float(amount) if colon else 1.0
            except ValueError:
                raise InputError(f"style {spec!r}: weight {amount.strip()!r} is not a number") from None
            weights[_index(token, spec)] += weight
    elif isinstance(spec, Mapping):
        for token, weight in spec.items():
            weights[_index(str(token), str(spec))] += float(weight)
    else:
        values = np.asarray(spec, dtype=np.float64)
        if values.shape != (NUM_STYLES,):
            raise InputError(f"style_weights needs {NUM_STYLES} numbers, got {values.size}")
        weights = values
    return _normalised(weights, spec)


def style_from_params(params: Mapping[str, Any]) -> np.ndarray:
    """The weights a parsed request asks for (``style`` or ``style_weights``, not both)."""
    if params.get("style") is not None and params.get("style_weights") is not None:
        raise InputError("give either 'style' or 'style_weights', not both")
    if params.get("style_weights") is not None:
        return parse_style(params["style_weights"])
    return parse_style(params.get("style"))


def extra_inputs(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The graph inputs besides the image for one request: ``{"style_weights": [26]}``."""
    return {STYLE_INPUT: style_from_params(params)}


def refuse_tiling(params: Mapping[str, Any], model: str) -> None:
    """``tile=true`` asked of a network with a style input: ``core.tiling``'s stage graphs
    carry only the image and the statistics, so these models run whole images."""
    if params.get("tile"):
        raise InputError(f"tile=true: tiling is not available for the {model} model (its instance norms "
                         "take their scale and shift from the style input); send tile=false or omit it")


def whole_images_only():
    """A ``core.stylizer.TilingPolicy`` that never tiles (see ``refuse_tiling``)."""
    from core.stylizer import TilingPolicy

    return TilingPolicy(threshold=2**62)


def open_stylizer(model, settings=None, gpu_id: int | None = None):
    """The ``Stylizer`` for ``multistyle.onnx``: measured with a real blend, never tiling."""
    from core.stylizer import Stylizer

    sample = {STYLE_INPUT: parse_style("19")}
    return Stylizer(model, settings, whole_images_only(), gpu_id=gpu_id, sample_feeds=sample)


def describe(weights: np.ndarray) -> str:
    """``"19"`` or ``"3:0.5,12:0.5"``: the blend in the form requests use (response header)."""
    used = [(i, float(w)) for i, w in enumerate(weights) if w > 0]
    if len(used) == 1:
        return str(used[0][0])
    return ",".join(f"{i}:{w:.3g}" for i, w in used)


class MultistylePainter:
    """The 26-style stylizer with one blend fixed: the interface of a one-style ``Stylizer``
    (``stylize_bytes``, ``paint``, ``model``, ``runtime``), for the batch CLI and the app."""

    def __init__(self, stylizer, weights: np.ndarray):
        self.stylizer = stylizer
        self.weights = weights
        self.model = stylizer.model

    @property
    def runtime(self) -> str:
        return self.stylizer.runtime

    def paint(self, photos, params):
        for options in params:
            refuse_tiling(options, "multistyle")
        extra = [{STYLE_INPUT: self.weights}] * len(photos)
        return self.stylizer.paint(photos, [{**options, "tile": False} for options in params], extra)

    def stylize_bytes(self, data: bytes, params: dict, limits: Limits | None = None) -> bytes:
        refuse_tiling(params, "multistyle")
        return self.stylizer.stylize_bytes(data, {**params, "tile": False}, limits or Limits(),
                                           {STYLE_INPUT: self.weights})
