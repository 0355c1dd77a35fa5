"""TorchServe handler for one fast style: image bytes in, stylized image bytes out.

One archive per style carries this file, the ``core`` modules it runs and the style's ONNX
files. The network runs through ``core.stylizer.Stylizer``, which picks the engine this
machine runs it best on (ONNX Runtime or OpenVINO, fp32/bf16/int8, a GPU when the worker
has one) and tiles very large images.

Request (``POST /predictions/<style>``): the image as the raw body, as multipart field
``image``, or JSON ``{"image": "<base64>", ...}``. Parameters (``core.style_options.PARAMS``)
as form fields, JSON keys or ``X-<Name>`` headers. A bad request gets a 4xx JSON body naming
the problem; the worker carries on. The response header ``X-Style-Runtime`` names the engine.
Behind KServe's v2 protocol the image is a BYTES input named ``image`` (base64) and the
output is the encoded image as base64.

Video: a clip in the same places (``Content-Type: video/mp4``, ``video/webm`` or
``video/quicktime``, multipart field ``image`` or ``video``, JSON base64) comes back painted
frame by frame, same kind unless ``format`` (mp4, webm, mov) says otherwise, its frame rate,
timestamps and sound kept, ``stabilize`` (0..1) against flicker; headers ``X-Style-Frames``,
``-Fps``, ``-Audio``, ``-Stabilize``, ``-Pixel-Format``. ``stream=true`` answers NDJSON
progress, then the clip as base64. A clip that cannot finish in time is a 413 naming the CLI.

The family is ``core.fast_service.SingleStyle``; the four steps are ``core.handler``'s.
"""

from __future__ import annotations

from core.fast_service import FastStyleService, SingleStyle
from core.handler import ServiceHandler
from core.stylizer import Stylizer
from core.torchserve import Worker


class FastStyleHandler(ServiceHandler):
    """TorchServe loads the one class of this module as the handler."""

    def open_service(self, worker: Worker) -> FastStyleService:
        return FastStyleService.open(SingleStyle, worker.name, worker.model_file, worker.config, worker.gpu_id)

    @property
    def stylizer(self) -> Stylizer:
        return self.service.stylizer
