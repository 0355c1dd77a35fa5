"""Stylizing images too large for one network call: overlapping tiles, global statistics.

A whole-image call's memory grows with the pixels (the first layers alone are 32 float
channels at full resolution: 2 GiB per activation at 4096²), so large images run in tiles.

Why the tiles cannot simply be stylized one by one: every instance-normalisation (IN)
layer normalises each channel by its mean and variance over the *whole* image. A tile
run alone uses its own statistics and comes out in its own palette, so the seams show.
Nor will approximate shared statistics do, since the networks are sensitive to them:
statistics of a downscaled copy, or all layers re-measured in one pass over the tiles (each
with the layers before it normalised by such approximations), fall far short of the
whole-image output (README, "Very large images", has the measured figures).

With the statistics fixed, the network is a chain of convolutions and pointwise maps: a
tile enlarged by a ``margin`` wider than the receptive field of what it runs computes its
core exactly as the whole image would, and cores are pasted edge to edge without seams
(no blending needed: the overlaps agree to float rounding).

Exact statistics need care, because layer ``k``'s input depends on how the layers before
it were normalised. So the network runs in stages, one IN layer at a time (planned by
``core.tiling_graphs.schedule``): the tensors still needed before layer ``k`` (its input,
and in a residual block the block's input) are computed tile by tile and stored for the
whole image in float16 when they are small (the quarter-resolution trunk: 16 values per
pixel, 512 MiB at 4096²), the pass pooling layer ``k``'s statistics over the tile cores as
it goes. The two layers too big to store (32 channels at full resolution) get a
statistics-only pass instead. So nearly every convolution runs once, float16 storage
loses nothing visible, and memory is two stored stages plus one tile's activations (time,
memory and PSNR against the whole-image call: bench/results/REPORT.md).

The per-stage graphs come from ``core.tiling_graphs`` at export time, as a bundle the
archive carries (``core.tiling_program.Program``), so serving needs ONNX Runtime only, not
``onnx``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core import settings
from core.checksums import sha256_of
from core.engines import REFERENCE, Candidate, Engine, open_engine
from core.tiling_program import BUNDLE_VERSION, Program, Stage, bundle_path

#: The networks downsample twice by 2: tile origins on this grid keep every layer aligned.
ALIGN = 4
#: The exported graphs pad smaller sides up to this (``networks.MIN_SIDE``).
MIN_SIDE = 16
#: Above this many pixels images are tiled by default: a whole-image call's memory grows with
#: the pixels while a tiled one's stays near one tile's, and below it the whole-image call is
#: the faster one (the benchmark's "high resolution" section measures both).
DEFAULT_THRESHOLD = 2048 * 2048
#: Environment variable overriding the threshold (pixels) for every model in the process.
THRESHOLD_ENV = "STYLE_TILE_THRESHOLD"


def threshold(configured: int | str | None = None) -> int:
    """The pixel count above which to tile: ``$STYLE_TILE_THRESHOLD``, else the model's
    configured ``tile_threshold``, else ``DEFAULT_THRESHOLD``. The environment wins so an
    operator can retune a deployed archive without rebuilding it."""
    from_env = settings.env(THRESHOLD_ENV)
    value, source = (from_env, f"${THRESHOLD_ENV}") if from_env is not None else (configured, "handler.tile_threshold")
    if value in (None, ""):
        return DEFAULT_THRESHOLD
    try:
        pixels = int(value)
    except (TypeError, ValueError):
        pixels = 0
    if pixels <= 0:  # an operator's typo: say which setting, rather than int()'s bare message
        raise ValueError(f"{source} must be a positive whole number of pixels "
                         f"(e.g. {DEFAULT_THRESHOLD}), got {value!r}")
    return pixels


def wants_tiles(height: int, width: int, forced: bool | None, limit: int) -> bool:
    """A request's ``tile`` parameter decides when given; otherwise the pixel count does."""
    return forced if forced is not None else height * width > limit


# ---------------------------------------------------------------------------------------
# Tile geometry
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """Tile geometry in input pixels, both multiples of ``ALIGN``.

    ``margin`` must cover the receptive field of each stage for the cores to be exact: a
    stage spans one IN layer, so under 8 px here (the widest: a 3x3 transposed convolution
    at half resolution, then the 9x9 output convolution). Memory and time per call grow with
    ``(tile + 2 * margin)²``, so the margin is kept to what exactness needs.
    """

    tile: int = 1024
    margin: int = 16

    def __post_init__(self) -> None:
        if self.tile % ALIGN or self.margin % ALIGN or self.tile < MIN_SIDE or self.margin < MIN_SIDE:
            raise ValueError(f"tile and margin must be multiples of {ALIGN}, at least {MIN_SIDE}: {self}")


@dataclass(frozen=True)
class Tile:
    """``core``: the pixels this tile is responsible for, ``(y0, y1, x0, x1)``; the last
    core runs to the padded size, as the network pads the image to ``ALIGN``.
    ``outer``: the core plus margin, clipped to the image: what the network is given."""

    core: tuple[int, int, int, int]
    outer: tuple[int, int, int, int]

    def core_in_outer(self) -> np.ndarray:
        """The core relative to the outer box, as the statistics graphs' ``core`` input."""
        (y0, y1, x0, x1), (oy0, _, ox0, _) = self.core, self.outer
        return np.array([y0 - oy0, x0 - ox0, y1 - oy0, x1 - ox0], np.int64)


def padded(size: int) -> int:
    """The size the network runs a side at (see ``networks.SizePreserving``)."""
    return max(MIN_SIDE, -(-size // ALIGN) * ALIGN)


def plan(height: int, width: int, layout: Layout) -> list[Tile]:
    """Tiles covering a ``height x width`` image, row by row."""
    tiles = []
    for y0 in range(0, height, layout.tile):
        for x0 in range(0, width, layout.tile):
            y1, x1 = min(padded(height), y0 + layout.tile), min(padded(width), x0 + layout.tile)
            outer = (
                max(0, y0 - layout.margin), min(height, y1 + layout.margin),
                max(0, x0 - layout.margin), min(width, x1 + layout.margin),
            )  # fmt: skip
            tiles.append(Tile((y0, y1, x0, x1), outer))
    return tiles


def load_program(model_path: str | os.PathLike) -> Program:
    """The bundle beside the model if it was made from this very model by this version,
    else compiled from the model now (which needs the ``onnx`` package; the export step
    writes the bundle)."""
    bundle = bundle_path(model_path)
    if bundle.is_file():
        header = Program.read_header(bundle)
        if header.get("version") == BUNDLE_VERSION and header.get("model_sha256") == sha256_of(model_path):
            return Program.load(bundle)
    try:
        from core.tiling_graphs import compile_file  # imports onnx: only when there is no bundle
    except ImportError as error:
        raise RuntimeError(
            f"no tiling bundle {bundle.name} made from {Path(model_path).name}, and no onnx package to build one "
            f"({error}); rebuild the archive with scripts/build.sh"
        ) from None
    return compile_file(model_path)


# ---------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------


@dataclass
class Pool:
    """Per-layer statistics merged over tiles: count, mean and summed squared deviations
    (Chan et al.'s parallel update) in float64, so many tiles lose no precision."""

    count: dict[int, float] = field(default_factory=dict)
    mean: dict[int, np.ndarray] = field(default_factory=dict)
    m2: dict[int, np.ndarray] = field(default_factory=dict)

    def add(self, k: int, count: float, mean: np.ndarray, var: np.ndarray) -> None:
        mean, var = mean.astype(np.float64), var.astype(np.float64)
        if k not in self.count:
            self.count[k], self.mean[k], self.m2[k] = count, mean, var * count
            return
        total = self.count[k] + count
        delta = mean - self.mean[k]
        self.mean[k] = self.mean[k] + delta * count / total
        self.m2[k] = self.m2[k] + var * count + delta**2 * self.count[k] * count / total
        self.count[k] = total

    def feeds(self, k: int) -> dict[str, np.ndarray]:
        """Layer ``k``'s pooled statistics as the fixed-statistics graphs' inputs."""
        variance = self.m2[k] / self.count[k]
        return {f"mean_{k}": self.mean[k].astype(np.float32), f"var_{k}": variance.astype(np.float32)}


# ---------------------------------------------------------------------------------------
# The stylizer
# ---------------------------------------------------------------------------------------


class TiledStylizer:
    """Runs a style's ONNX graph (``image`` -> ``stylized``, float NCHW 0..255, any size)
    tile by tile with exact global instance-norm statistics; see the module docstring."""

    def __init__(
        self,
        model: str | os.PathLike | Program,
        layout: Layout = Layout(),
        threads: int = 0,
        candidate: Candidate = REFERENCE,
    ):
        """``candidate``: the backend and precision the stage graphs run with (that of the
        whole-image engine; ``model`` is the file it runs, e.g. the int8 variant)."""
        program = model if isinstance(model, Program) else load_program(model)
        self.layout = layout
        self.schedule = program.schedule
        self.engines = [open_engine(g, candidate, threads, shared_arena=True) for g in program.graphs]

    def __call__(self, image: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """``float32 [3, H, W]`` in 0..255 -> the stylized image, same shape. ``extra``: the
        graph's other inputs (whole-image values, such as a style blend), given to every stage."""
        _, height, width = image.shape
        tiles = plan(height, width, self.layout)
        stored: dict[str, np.ndarray] = {self.schedule.image: image}
        stats: dict[str, np.ndarray] = dict(extra or {})
        for stage, engine in zip(self.schedule.stages, self.engines, strict=True):
            stored = {name: stored[name] for name in stage.sources}  # drop what is done with
            targets, pool = self._pass(stage, engine, stored, stats, tiles, (height, width))
            stored.update(targets)
            for k in stage.layers:
                stats.update(pool.feeds(k))
        return stored[self.schedule.output]

    def _pass(
        self, stage: Stage, engine: Engine, stored: dict, stats: dict, tiles: list[Tile], size
    ) -> tuple[dict[str, np.ndarray], Pool]:
        """Runs a stage on every tile: pastes each tile's core of every target into a
        whole-image array, and pools the statistics of the stage's layers over the cores."""
        height, width = size
        strides = self.schedule.strides
        wanted = set(engine.input_names)
        targets: dict[str, np.ndarray] = {}
        pool = Pool()
        for tile in tiles:
            (y0, y1, x0, x1), (oy0, oy1, ox0, ox1) = tile.core, tile.outer
            feeds = {name: stats[name] for name in wanted if name in stats}
            if "core" in wanted:
                feeds["core"] = tile.core_in_outer()
            for name in wanted & stored.keys():
                # Stored tensors are padded: an outer box at the image's edge runs to it.
                s = strides[name]
                ey = oy1 if name == self.schedule.image or oy1 < height else padded(height)
                ex = ox1 if name == self.schedule.image or ox1 < width else padded(width)
                feeds[name] = np.ascontiguousarray(stored[name][None, :, oy0 // s : ey // s, ox0 // s : ex // s])
            if self.schedule.image in wanted and self.schedule.image not in feeds:
                # Only its size is read (for the final crop): untouched zeros cost no memory.
                feeds[self.schedule.image] = np.zeros((1, 3, oy1 - oy0, ox1 - ox0), np.float32)
            results = engine.run(feeds, shrink=tile is tiles[-1])
            for name, out in zip(stage.targets, results, strict=False):
                s = strides[name]
                if name not in targets:  # the network's padded size, cropped at the very end
                    rows, cols = (height, width) if name == self.schedule.output else (padded(height), padded(width))
                    targets[name] = np.empty((out.shape[1], rows // s, cols // s), out.dtype)
                _paste(targets[name], out[0], tile, s)
            stats_out = results[len(stage.targets) :]
            for k, mean, var in zip(stage.layers, stats_out[::2], stats_out[1::2], strict=True):
                stride = strides[self.schedule.layer_inputs[k]]
                pool.add(k, ((y1 - y0) // stride) * ((x1 - x0) // stride), mean, var)
        return targets, pool


def _paste(target: np.ndarray, out: np.ndarray, tile: Tile, stride: int) -> None:
    """Copies the core of one tile's output (``out``, at ``stride``) into ``target``."""
    (y0, y1, x0, x1), (oy0, _, ox0, _) = tile.core, tile.outer
    ty, tx = y0 // stride, x0 // stride  # where the core goes
    oy, ox = (y0 - oy0) // stride, (x0 - ox0) // stride  # where it is in the tile's output
    # The last core may run into the padding, which the final output does not have.
    ny = min((y1 - y0) // stride, target.shape[1] - ty)
    nx = min((x1 - x0) // stride, target.shape[2] - tx)
    target[:, ty : ty + ny, tx : tx + nx] = out[:, oy : oy + ny, ox : ox + nx]
