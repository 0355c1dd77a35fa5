"""TorchServe handler for arbitrary style transfer: any painting as the style, one pass.

The archive carries this file, the ``core`` modules it runs, ``arbitrary_transform.onnx``
(the served model file) and ``arbitrary_predict.onnx``; the work is ``core.arbitrary``'s.
Request (``POST /predictions/arbitrary``): multipart fields ``content`` and ``style`` (more
styles: ``style_2``, ``style_3``, ... blended by ``style_weights``), JSON ``{"content": b64,
"styles": [b64, ...]}``, or KServe v2 inputs ``content`` and ``style``. Parameters as form
fields, JSON keys or ``X-<Name>`` headers: ``strength`` (0..1, along the style vector from
the photo's own style), ``style_size`` (default 256), ``style_weights``,
``preserve_colors``, ``format``, ``quality``, ``png_compression``, ``max_side`` (the
photo's; style images have their own pixel limit). The output has the photo's size.
``tile=true`` is refused. Headers ``X-Style-Runtime`` (the engine) and
``X-Style-Cache-Hits`` (style images whose vector came from the cache); metric
``StyleVectorCacheHits`` counts the latter. A video clip as ``content`` (or ``video``;
multipart beside the style files, or JSON base64) is painted frame by frame with one style
vector, taken at its first frame, as on ``handlers/fast_style.py`` (``stabilize``,
``stream``, ``format`` mp4/webm/mov).

The family is ``core.fast_service.Arbitrary``; the four steps are ``core.handler``'s.
"""

from __future__ import annotations

from core.fast_service import Arbitrary, FastStyleService
from core.handler import ServiceHandler
from core.torchserve import Worker


class ArbitraryHandler(ServiceHandler):
    """TorchServe loads the one class of this module as the handler."""

    counted = {"cache_hits": "StyleVectorCacheHits"}

    def open_service(self, worker: Worker) -> FastStyleService:
        return FastStyleService.open(Arbitrary, worker.name, worker.model_file, worker.config, worker.gpu_id)
