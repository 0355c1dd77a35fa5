"""Temporal stability for painted video: each painting leans on the previous one, moved along
with the scene, so textures stay put instead of boiling from frame to frame.

A style network paints every frame alone; small changes between content frames (noise, a
one-pixel pan) change its brush strokes everywhere, which reads as flicker. Here:

1. dense optical flow (OpenCV's DIS) is computed on the *content* frames, which are smooth
   and faithful, not on the paintings, whose strokes would mislead it;
2. the previous *output* is warped along that flow onto the current frame;
3. pixels the flow cannot vouch for (occluded, uncovered, off the edge) are found by a
   forward-backward check: following the flow there and back must land where it started;
4. the current painting and the warped previous output are blended on the trusted pixels:
   ``out = painting + strength * mask * (warped - painting)``;
5. at a scene cut (few trusted pixels) nothing is carried over.

``warping_error`` is the measure the tests and the benchmark report: the mean absolute
difference between each output frame and the previous output warped onto it, over the
pixels the flow check trusts, in 8-bit levels.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

#: Flow is computed on frames at most this wide or high (scaled down, the flow scaled back
#: up): DIS's cost grows with the pixel count while the motion it must find does not need
#: more detail than this to place strokes.
FLOW_SIDE = 640
#: A pixel is trusted when the forward-backward round trip misses its start by less than
#: this many pixels (plus a share of the motion: fast motion is measured less precisely).
CONSISTENCY_PX = 1.0
CONSISTENCY_SHARE = 0.05
#: Under this share of trusted pixels the frames show different scenes: start afresh.
CUT_SHARE = 0.3


def _gray(frame: np.ndarray, scale: float) -> np.ndarray:
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    if scale != 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return gray


def _scale_for(height: int, width: int) -> float:
    return min(1.0, FLOW_SIDE / max(height, width))


@dataclass
class Flow:
    """Where each pixel of the current frame was in the previous one (``backward``, in pixels
    at full size), and which pixels that is trustworthy for (``mask`` float32 0..1)."""

    backward: np.ndarray  # [H, W, 2] float32
    mask: np.ndarray  # [H, W] float32

    @property
    def trusted(self) -> float:
        return float(self.mask.mean())


class FlowEstimator:
    """DIS optical flow in both directions between two content frames, with the occlusion mask.

    ``preset``: DIS's speed/accuracy trade. The stabilizer runs ``FAST`` (beside the network,
    every cycle it takes is the network's); ``warping_error`` measures with ``MEDIUM``, a
    fixed yardstick whatever the stabilizer uses."""

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_FAST) -> None:
        self._dis = cv2.DISOpticalFlow_create(preset)

    def __call__(self, previous: np.ndarray, current: np.ndarray) -> Flow:
        """``previous``, ``current``: RGB uint8 ``[H, W, 3]`` content frames of one size."""
        height, width = current.shape[:2]
        scale = _scale_for(height, width)
        a, b = _gray(previous, scale), _gray(current, scale)
        backward = self._dis.calc(b, a, None)  # current -> previous
        forward = self._dis.calc(a, b, None)  # previous -> current
        # Round trip: from x in the current frame to x + backward(x) in the previous one and
        # back by the forward flow found there; on a visible pixel the two cancel.
        grid = _grid(*backward.shape[:2])
        back_there = cv2.remap(forward, grid + backward, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        miss = np.linalg.norm(backward + back_there, axis=2)
        motion = np.linalg.norm(backward, axis=2)
        target = grid + backward
        inside = ((target[..., 0] >= 0) & (target[..., 0] <= backward.shape[1] - 1)
                  & (target[..., 1] >= 0) & (target[..., 1] <= backward.shape[0] - 1))  # fmt: skip
        mask = ((miss < CONSISTENCY_PX * scale + CONSISTENCY_SHARE * motion) & inside).astype(np.float32)
        if scale != 1.0:
            backward = cv2.resize(backward, (width, height), interpolation=cv2.INTER_LINEAR) / scale
            mask = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR)
        return Flow(backward.astype(np.float32), mask)


@functools.cache
def _grid(height: int, width: int) -> np.ndarray:
    """Pixel coordinates ``[H, W, 2]`` (x, y); cached per size (every frame of a clip shares one)."""
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    grid = np.stack([xs, ys], axis=2)
    grid.flags.writeable = False
    return grid


def warp(image: np.ndarray, flow: Flow) -> np.ndarray:
    """The previous frame's ``image`` moved onto the current frame along ``flow``."""
    target = _grid(*flow.backward.shape[:2]) + flow.backward
    return cv2.remap(image, target, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class Stabilizer:
    """Blends each painting with the previous output warped onto it; ``strength`` 0 is off
    (paintings pass through untouched), 1 leans on the past as far as the flow is trusted."""

    def __init__(self, strength: float):
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"stabilize must be within 0..1, got {strength}")
        self.strength = strength
        self._flow = FlowEstimator() if strength > 0 else None
        self._content: np.ndarray | None = None
        self._output: np.ndarray | None = None
        self.cuts = 0

    def __call__(self, content: np.ndarray, painting: np.ndarray) -> np.ndarray:
        """``content``: the frame as decoded; ``painting``: its painting; both RGB uint8
        ``[H, W, 3]``. Returns the frame to write."""
        if self._flow is None:
            return painting
        output = painting
        if self._content is not None and self._content.shape == content.shape:
            flow = self._flow(self._content, content)
            if flow.trusted >= CUT_SHARE:
                weight = self.strength * flow.mask
                # weight x warped + (1 - weight) x painting, per pixel, in one pass over uint8 frames.
                output = cv2.blendLinear(warp(self._output, flow), painting, weight, 1.0 - weight)
            else:
                self.cuts += 1
        self._content, self._output = content, output
        return output


def warping_error(contents: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> float:
    """Mean |out_t - warp(out_t-1)| over the pixels the flow on the content frames trusts,
    over all consecutive pairs, in 8-bit levels (lower: steadier)."""
    estimator = FlowEstimator(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    total, count = 0.0, 0.0
    for t in range(1, len(contents)):
        flow = estimator(contents[t - 1], contents[t])
        warped = warp(outputs[t - 1], flow).astype(np.float32)
        difference = np.abs(outputs[t].astype(np.float32) - warped).mean(axis=2)
        total += float((difference * flow.mask).sum())
        count += float(flow.mask.sum())
    return total / count if count else 0.0
