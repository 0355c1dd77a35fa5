"""TorchServe handler for the 26-style network (Dumoulin et al., Apache-2.0 weights).

The archive carries this file, the ``core`` modules it runs and ``multistyle.onnx``. Request
(``POST /predictions/multistyle``): the image as for the other fast styles (raw body,
multipart field ``image``, JSON ``{"image": "<base64>"}`` or a KServe v2 ``image`` input),
and the style as ``style`` (index 0-25, a name from ``core.multistyle.STYLE_NAMES``, or a
blend ``3:0.5,12:0.5``) in a form field, a JSON key (text or a number) or an ``X-Style``
header, or JSON ``style_weights`` (26 numbers). Weights must be non-negative; they are
normalised. ``strength``, ``preserve_colors``, ``format``, ``quality``, ``png_compression``
and ``max_side`` as elsewhere; ``tile=true`` is refused (this network runs whole images).
Response headers ``X-Style-Runtime`` (the engine) and ``X-Style-Blend`` (the normalised
blend). Bad requests get a 4xx JSON body naming the problem. A video clip in place of the
image is painted frame by frame in the chosen blend, as on ``handlers/fast_style.py``
(``stabilize``, ``stream``, ``format`` mp4/webm/mov).

The family is ``core.fast_service.Multistyle``; the four steps are ``core.handler``'s.
"""

from __future__ import annotations

from core.fast_service import FastStyleService, Multistyle
from core.handler import ServiceHandler
from core.torchserve import Worker


class MultistyleHandler(ServiceHandler):
    """TorchServe loads the one class of this module as the handler."""

    def open_service(self, worker: Worker) -> FastStyleService:
        return FastStyleService.open(Multistyle, worker.name, worker.model_file, worker.config, worker.gpu_id)
