"""The one fast-style runtime: a style network ready to paint, on the fastest correct engine.

The TorchServe handlers, the KServe predictor, the batch CLI and the Streamlit page all
paint through a ``Stylizer``, so the same photo and settings give the same bytes
everywhere. It owns:

- the engine, chosen once per machine by measurement (``core.runtime_choice``) among
  ONNX Runtime and OpenVINO at fp32/bf16/int8/fp16, and cached;
- the tiling policy (above a pixel threshold, or when a request asks) and the tiler,
  built on the first tiled image with the same backend and precision (``core.tiling``);
- batching: photos of one size with the same extra inputs share one network call;
- the finishing step (colours, strength) and the codec around it.

The model file contract: input ``image`` float32 ``[N, 3, H, W]`` RGB 0..255, any size,
output ``stylized`` in the same layout; further graph inputs (a multi-style network's
``style_weights``, say) are passed by name.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image

from core import codec, engines, runtime_choice, tiling
from core.codec import Limits
from core.engines import Candidate, Engine
from core.photos import measuring_photos
from core.runtime_choice import Choice, RuntimeSettings
from core.style_options import finish

logger = logging.getLogger(__name__)

Feeds = Mapping[str, np.ndarray]


@dataclass(frozen=True)
class TilingPolicy:
    """When to tile (``threshold`` pixels, unless a request says) and the tile geometry."""

    threshold: int = tiling.DEFAULT_THRESHOLD
    layout: tiling.Layout = tiling.Layout()

    @classmethod
    def from_config(cls, config: Mapping | None = None) -> TilingPolicy:
        config = config or {}
        layout = tiling.Layout(tile=int(config.get("tile_size", tiling.Layout.tile)))
        return cls(tiling.threshold(config.get("tile_threshold")), layout)


class Stylizer:
    """One style network, opened with the engine this machine runs it best on."""

    def __init__(
        self,
        model: str | Path,
        settings: RuntimeSettings | None = None,
        tiling_policy: TilingPolicy | None = None,
        gpu_id: int | None = None,
        sample_feeds: Feeds | None = None,
        cache: Path | None = None,
        clock: Callable[[], float] = time.perf_counter,
        engine: Engine | None = None,
    ):
        """``sample_feeds``: values for the graph's extra inputs while the candidates are
        measured (e.g. one style of a multi-style network); ``cache``: the folder keeping the
        per-machine choice (default ``$STYLE_RUNTIME_DIR``); ``clock`` is for tests;
        ``engine``: run this one instead of choosing (the CLI's PyTorch ``.pth`` files)."""
        self.model = Path(model)
        self.settings = settings or RuntimeSettings.from_config()
        self.tiling = tiling_policy or TilingPolicy.from_config()
        self.sample_feeds = dict(sample_feeds or {})
        if engine is not None:
            self.choice = Choice(engine.candidate, engine)
        else:
            self.choice = self._choose(gpu_id, cache if cache is not None else runtime_choice.cache_dir(), clock)
        self.engine: Engine = self.choice.engine
        self._tiler: tiling.TiledStylizer | None = None
        logger.info("%s runs on %s%s", self.model.name, self.runtime, " (cached choice)" if self.choice.cached else "")

    @property
    def runtime(self) -> str:
        """The engine's label, e.g. ``openvino/bf16``: logged, in a header and a metric."""
        return self.choice.candidate.label

    def describe(self) -> dict:
        return {"model": self.model.name, **self.choice.describe()}

    # -- choosing the engine ------------------------------------------------------------

    def _open(self, candidate: Candidate) -> Engine:
        return engines.open_engine(candidate.model_file(self.model), candidate, self.settings.threads)

    def _choose(self, gpu_id: int | None, cache: Path, clock: Callable[[], float]) -> Choice:
        found = engines.candidates(self.model, gpu_id)
        allowed = runtime_choice.wanted(found, self.settings)  # bad settings fail here, before any work
        key = runtime_choice.cache_key(self.model, allowed, self.settings)
        # The choice may also be an allowed candidate run with its norms in fp32.
        known = {c.label: c for c in allowed}
        known.update({n.label: n for n in (c.with_fp32_norms() for c in allowed) if n is not None})
        # One measurement at a time on the machine: workers starting together would time
        # each other, not the candidates. Whoever waited finds the choice cached.
        with runtime_choice.measuring_lock(cache):
            record = runtime_choice.read_cached(cache, key)
            if record and record.get("runtime") in known:
                candidate = known[record["runtime"]]
                measured = [runtime_choice.Measurement(**m) for m in record.get("measured", [])]
                return Choice(candidate, self._open(candidate), measured, cached=True)
            choice = runtime_choice.choose(allowed, self.settings, self._open, self._measuring_feeds(), clock,
                                           engines.recorded_quality(self.model))
            runtime_choice.write_cached(cache, key, choice.describe())
        return choice

    def _measuring_feeds(self) -> dict[str, np.ndarray]:
        """The measuring photos as one batch: one call checks every photo's quality."""
        photos = measuring_photos(runtime_choice.MEASURE_SIDE, runtime_choice.MEASURE_PHOTOS)
        return {"image": np.stack([codec.to_array(photo) for photo in photos]), **self.sample_feeds}

    # -- running the network ------------------------------------------------------------

    def run(self, batch: np.ndarray, **extra: np.ndarray) -> np.ndarray:
        """``float32 [N, 3, H, W]`` 0..255 -> the stylized batch, whole images in one call."""
        return self.engine.run({"image": batch, **extra})[0]

    def run_image(self, array: np.ndarray, extra: Feeds | None = None, tile: bool | None = None) -> np.ndarray:
        """One ``float32 [3, H, W]`` image, tiled when the policy (or ``tile``) says so."""
        extra = dict(extra or {})
        if self.wants_tiles(array.shape[1], array.shape[2], tile):
            return self.tiler(array, extra)
        return self.run(array[None], **extra)[0]

    @property
    def can_tile(self) -> bool:
        """Tiling needs a float or int8 ONNX graph of the image alone, on a backend that runs
        its stage graphs (not the CLI's PyTorch or uint8 engines)."""
        candidate = self.choice.candidate
        # The stage graphs carry no inputs but the image: a graph conditioned on more (a style
        # blend, a style vector) runs whole.
        plain = set(self.engine.input_names) <= {"image"}
        return plain and candidate.backend in engines.BACKENDS and candidate.precision in engines.PRECISIONS

    def wants_tiles(self, height: int, width: int, tile: bool | None) -> bool:
        return self.can_tile and tiling.wants_tiles(height, width, tile, self.tiling.threshold)

    @property
    def tiler(self) -> tiling.TiledStylizer:
        """Built on the first tiled image: its stage engines take time and memory that a
        worker serving only small images never needs. Same backend and precision as the
        whole-image engine (an ONNX Runtime fp16 GPU choice tiles with the float stages)."""
        if self._tiler is None:
            candidate = self.choice.candidate
            if candidate.backend == "onnxruntime" and candidate.precision == "fp16":
                candidate = replace(candidate, precision="fp32")
            self._tiler = tiling.TiledStylizer(
                candidate.model_file(self.model), self.tiling.layout, self.settings.threads, candidate=candidate
            )
        return self._tiler

    # -- painting ----------------------------------------------------------------------

    def paint(
        self, photos: Sequence[Image.Image], params: Sequence[dict], extra: Sequence[Feeds | None] | None = None
    ) -> list[Image.Image]:
        """Photos -> paintings, finished per each one's ``params`` (the fast-style request
        parameters: ``tile``, ``strength``, ``preserve_colors``). Photos of one size with
        equal extra inputs that are not tiled share one batched call."""
        extra = list(extra) if extra is not None else [None] * len(photos)
        arrays: list[np.ndarray | None] = [None] * len(photos)
        groups: dict[tuple, list[int]] = {}
        for i, (photo, options) in enumerate(zip(photos, params, strict=True)):
            if self.wants_tiles(photo.height, photo.width, options.get("tile")):
                arrays[i] = self.tiler(codec.to_array(photo), dict(extra[i] or {}))
            else:
                groups.setdefault((photo.size, _feeds_key(extra[i])), []).append(i)
        for members in groups.values():
            batch = np.stack([codec.to_array(photos[i]) for i in members])
            outputs = self.run(batch, **dict(extra[members[0]] or {}))
            for i, output in zip(members, outputs, strict=True):
                arrays[i] = output
        return [
            finish(codec.from_array(array), photo, options)
            for array, photo, options in zip(arrays, photos, params, strict=True)
        ]

    def stylize_bytes(
        self, data: bytes, params: dict, limits: Limits | None = None, extra: Feeds | None = None
    ) -> bytes:
        """Encoded photo -> encoded painting: decode (``max_side``), paint, encode as
        ``params["format"]`` at ``params["quality"]``. ``InputError`` for bad input."""
        photo = codec.decode(data, limits or Limits(), params.get("max_side"))
        painting = self.paint([photo], [params], [extra])[0]
        return codec.encode(painting, params.get("format") or "png", params.get("quality", 92))


def _feeds_key(feeds: Feeds | None) -> tuple:
    return tuple(sorted((name, value.tobytes()) for name, value in (feeds or {}).items()))
