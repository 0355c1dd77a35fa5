"""The fast path's request options and their finishing step, shared by handler and CLI."""

from __future__ import annotations

from PIL import Image

from core.codec import DEFAULT_PNG_COMPRESSION
from core.color import preserve_colors
from core.request import Param

PARAMS = {
    "format": Param(str, None, help="png | jpeg | webp (default: Accept header, else png); for a video: "
                    "mp4 | webm | mov (default: Accept header, else the upload's own kind)"),
    "quality": Param(int, 92, low=1, high=100, help="JPEG/WebP quality"),
    "png_compression": Param(int, DEFAULT_PNG_COMPRESSION, low=0, high=9,
                             help="PNG zlib level: 0 stored; 1 run-length (fast); 2..9 zlib's search, slower"),
    "max_side": Param(int, None, low=16, high=16384, help="downscale so the longer side fits"),
    "strength": Param(float, 1.0, low=0.0, high=1.0, help="1 = fully stylized, 0 = the photo"),
    "preserve_colors": Param(bool, False, help="keep the photo's colours, take the style's luminance"),
    # None = automatic: tiled above the model's pixel threshold (core.tiling.DEFAULT_THRESHOLD).
    "tile": Param(bool, None, help="true/false forces tiled/whole-image; default: tiled above the threshold"),
}
#: What a video request adds (``core.video``): the same finishing options apply to every frame.
VIDEO_PARAMS = {
    "stabilize": Param(float, None, low=0.0, high=1.0,
                       help="video only: 0 paints each frame alone, 1 holds the painting steady along the motion "
                       "(default: core.video's)"),
    "stream": Param(bool, False, help="answer NDJSON: progress lines (frames done, total, ETA), then the result "
                    "as base64"),
}


def finish(stylized: Image.Image, photo: Image.Image, params: dict) -> Image.Image:
    """The user's finishing options: keep the photo's colours, then blend by strength."""
    if params["preserve_colors"]:
        stylized = preserve_colors(stylized, photo)
    if params["strength"] < 1.0:
        stylized = Image.blend(photo, stylized, params["strength"])
        stylized.info = {}  # blend copies the photo's metadata; a painting carries none
    return stylized
