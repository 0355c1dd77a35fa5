"""Any painting as a style in one forward pass (Ghiasi et al.'s arbitrary stylization).

``ArbitraryStylizer`` pairs the two networks the export writes: the style predictor
(``arbitrary_predict.onnx``: a square style image -> 100-number style vector) and the style
transformer (``arbitrary_transform.onnx``, run by ``core.stylizer.Stylizer``: photo + style
vector -> painting, at the photo's own size). Per request it

1. turns each style image into its vector: decoded under its own pixel limit (never the
   photo's ``max_side``), centre-cropped square and resized to ``style_size``; vectors are
   kept in a bounded LRU cache keyed by the SHA-256 of the image bytes and ``style_size``, so
   a repeated style skips the predictor;
2. blends several styles' vectors by their weights;
3. for ``strength`` below 1, interpolates between the photo's own style vector and the
   blend (Ghiasi's identity interpolation: 0 is close to the photo, restyled by itself);
4. paints, with ``preserve_colors`` applied as on the other fast styles.

Shared by the fast-style service (``core.fast_service``: TorchServe and KServe), the CLI
and the app.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from core import codec, engines
from core.codec import Limits
from core.errors import InputError
from core.multistyle import refuse_tiling, whole_images_only
from core.request import MISSING_STYLE, Param
from core.settings import MAX_INPUT_PIXELS
from core.style_options import PARAMS as FAST_PARAMS

STYLE_INPUT = "style_vector"
STYLE_DIM = 100
#: The predictor's training size; the default ``style_size``.
STYLE_SIZE = 256
#: The predictor's side must be a multiple of this (five stride-2 convolutions, TF padding).
PREDICTOR_MULTIPLE = 32
PREDICTOR_FILE = "arbitrary_predict.onnx"
TRANSFORM_FILE = "arbitrary_transform.onnx"
#: Style images: the upload limit only (they are shrunk to ``style_size`` after decoding).
STYLE_LIMITS = Limits(max_input_pixels=MAX_INPUT_PIXELS, max_pixels=MAX_INPUT_PIXELS)
#: The endpoint's parameters. ``strength`` here moves along the style vector, not a pixel fade.
PARAMS = {
    **FAST_PARAMS,
    "strength": Param(float, 1.0, low=0.0, high=1.0, help="1 = the style, 0 = the photo's own style"),
    "style_weights": Param(list, None, help="blend weights, one per style image"),
    "style_size": Param(int, STYLE_SIZE, low=64, high=1024,
                        help="side the style image is read at (rounded down to a multiple of 32)"),
}
def blend_weights(count: int, weights: Sequence[float] | None) -> np.ndarray:
    """One non-negative weight per style, normalised; equal weights when none are given."""
    if weights is None:
        return np.full(count, 1.0 / count, np.float32)
    values = np.asarray(weights, np.float64)
    if values.shape != (count,):
        raise InputError(f"style_weights has {values.size} numbers for {count} style image(s)")
    if (values < 0).any() or values.sum() <= 0:
        raise InputError("style_weights must be non-negative and not all zero")
    return (values / values.sum()).astype(np.float32)


def predictor_side(style_size: int) -> int:
    return max(2 * PREDICTOR_MULTIPLE, style_size // PREDICTOR_MULTIPLE * PREDICTOR_MULTIPLE)


def predictor_input(image: Image.Image, style_size: int) -> np.ndarray:
    """The centre square of ``image`` at the predictor's side: ``float32 [1, 3, S, S]``."""
    side = predictor_side(style_size)
    return codec.to_array(ImageOps.fit(image, (side, side), Image.Resampling.LANCZOS))[None]


class StyleVectorCache:
    """A bounded LRU map ``(sha256, style_size) -> style vector``, safe across threads;
    ``hits`` and ``misses`` count lookups (the handler reports hits as a metric)."""

    def __init__(self, size: int = 256):
        self.size = size
        self._items: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, int]) -> np.ndarray | None:
        with self._lock:
            vector = self._items.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: tuple[str, int], vector: np.ndarray) -> None:
        with self._lock:
            self._items[key] = vector
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class StyleRequest:
    """What one request asks for besides the photo (``of`` checks it)."""

    styles: tuple[bytes, ...]
    weights: np.ndarray
    strength: float
    style_size: int

    @classmethod
    def of(cls, styles: Sequence[bytes], params: Mapping[str, Any]) -> StyleRequest:
        """The style images of a request (in the client's order) and its checked parameters."""
        if not styles:
            raise InputError(MISSING_STYLE)
        weights = blend_weights(len(styles), params.get("style_weights"))
        return cls(tuple(styles), weights, float(params["strength"]), int(params["style_size"]))


class ArbitraryStylizer:
    """The predictor, the transformer's ``Stylizer`` and the style-vector cache."""

    def __init__(self, transform: Any, predictor: engines.Engine, cache_size: int = 256,
                 style_limits: Limits = STYLE_LIMITS):
        self.transform = transform  # a core.stylizer.Stylizer for arbitrary_transform.onnx
        self.predictor = predictor
        self.cache = StyleVectorCache(cache_size)
        self.style_limits = style_limits
        self.predictor_runs = 0

    @classmethod
    def open(cls, model_dir: str | Path, settings=None, gpu_id: int | None = None, cache_size: int = 256,
             max_style_input_pixels: int = MAX_INPUT_PIXELS) -> ArbitraryStylizer:
        """Both networks from ``model_dir``. The predictor runs on ONNX Runtime fp32 (small, and
        its output is a vector, not an image to measure by PSNR); the transformer's engine is
        chosen by measurement with a real style vector, and it never tiles."""
        from core.photos import default_parity_photo
        from core.stylizer import Stylizer

        model_dir = Path(model_dir)
        threads = settings.threads if settings is not None else 0
        predictor = engines.open_engine(model_dir / PREDICTOR_FILE, engines.REFERENCE, threads)
        sample = Image.open(default_parity_photo()).convert("RGB")
        vector = predictor.run({"image": predictor_input(sample, STYLE_SIZE)})[0]
        transform = Stylizer(model_dir / TRANSFORM_FILE, settings, whole_images_only(), gpu_id=gpu_id,
                             sample_feeds={STYLE_INPUT: vector})
        limits = Limits(max_input_pixels=max_style_input_pixels, max_pixels=max_style_input_pixels)
        return cls(transform, predictor, cache_size, limits)

    @property
    def runtime(self) -> str:
        return self.transform.runtime

    def image_vector(self, image: Image.Image, style_size: int = STYLE_SIZE) -> np.ndarray:
        """The style vector ``[1, 100]`` of a decoded image (the predictor runs)."""
        self.predictor_runs += 1
        return self.predictor.run({"image": predictor_input(image, style_size)})[0][:1]

    def style_vector(self, data: bytes, style_size: int = STYLE_SIZE) -> np.ndarray:
        """The style vector of an encoded style image, from the cache when it was seen before.
        ``InputError`` when the bytes are not an image this server accepts."""
        key = (hashlib.sha256(data).hexdigest(), predictor_side(style_size))
        vector = self.cache.get(key)
        if vector is None:
            try:
                image = codec.decode(data, self.style_limits)
            except InputError as error:
                raise InputError(f"style image: {error}", error.status) from None
            vector = self.image_vector(image, style_size)
            self.cache.put(key, vector)
        return vector

    def target_vector(self, content: Image.Image, request: StyleRequest) -> np.ndarray:
        """The vector the transformer gets: the weighted blend of the styles' vectors, moved
        toward the photo's own vector when ``strength`` < 1."""
        vectors = np.concatenate([self.style_vector(s, request.style_size) for s in request.styles])
        target = (request.weights[:, None] * vectors).sum(axis=0, keepdims=True)
        if request.strength < 1.0:
            own = self.image_vector(content, request.style_size)
            target = request.strength * target + (1.0 - request.strength) * own
        return target.astype(np.float32)

    def paint_vectors(self, contents: Sequence[Image.Image], vectors: Sequence[np.ndarray],
                      params: Sequence[Mapping[str, Any]]) -> list[Image.Image]:
        """Photos painted with their target vectors (``target_vector``); photos of one size
        with the same vector share a call. ``strength`` was spent on the vector: the stylizer's
        finishing step only recolours (``preserve_colors``)."""
        finishing = []
        for options in params:
            refuse_tiling(options, "arbitrary")
            finishing.append({**options, "strength": 1.0, "tile": False})
        extra = [{STYLE_INPUT: vector} for vector in vectors]
        return self.transform.paint(list(contents), finishing, extra)

    def paint(self, content: Image.Image, styles: Sequence[bytes], weights: Sequence[float] | None = None,
              strength: float = 1.0, style_size: int = STYLE_SIZE, params: Mapping[str, Any] | None = None
              ) -> Image.Image:
        """One photo in the blend of ``styles`` (encoded images). ``params``: the fast-style
        finishing options (``preserve_colors``); defaults as for a request without them."""
        if not styles:
            raise InputError("missing style image")
        request = StyleRequest(tuple(styles), blend_weights(len(styles), weights), strength, style_size)
        options = {name: spec.default for name, spec in PARAMS.items()} | dict(params or {})
        return self.paint_vectors([content], [self.target_vector(content, request)], [options])[0]


class FixedStylePainter:
    """An ``ArbitraryStylizer`` with its style images fixed: the interface of a one-style
    ``Stylizer`` (``stylize_bytes``, ``paint``, ``model``, ``runtime``), for the batch CLI and
    the app. ``strength`` in the params moves along the style vector, as on the endpoint."""

    def __init__(self, painter: ArbitraryStylizer, styles: Sequence[bytes], weights: Sequence[float] | None = None,
                 style_size: int = STYLE_SIZE):
        self.painter = painter
        self.styles = tuple(styles)
        self.weights = blend_weights(len(self.styles), weights)
        self.style_size = style_size
        self.model = painter.transform.model
        for style in self.styles:  # a bad style image fails now, before any photo
            painter.style_vector(style, style_size)

    @property
    def runtime(self) -> str:
        return self.painter.runtime

    def paint(self, photos: Sequence[Image.Image], params: Sequence[Mapping[str, Any]]) -> list[Image.Image]:
        vectors = []
        for photo, options in zip(photos, params, strict=True):
            request = StyleRequest(self.styles, self.weights, float(options.get("strength", 1.0)), self.style_size)
            vectors.append(self.painter.target_vector(photo, request))
        return self.painter.paint_vectors(photos, vectors, params)

    def stylize_bytes(self, data: bytes, params: dict, limits: Limits | None = None) -> bytes:
        photo = codec.decode(data, limits or Limits(), params.get("max_side"))
        painting = self.paint([photo], [params])[0]
        return codec.encode(painting, params.get("format") or "png", params.get("quality", 92))
