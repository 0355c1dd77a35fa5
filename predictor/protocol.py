"""The Open Inference Protocol (v2) side of the predictor: tensors and parameters in, tensors out.

The KServe adapter of the services: ``read_request`` turns a v2 request into the same
``core.request.Request`` TorchServe's rows become, with the same names (one convention for
both servers), but for the photo: input ``image`` (``content`` for ``gatys``, as its field):
``BYTES`` ``[1]`` (an encoded JPEG/PNG/WebP, or a video clip the fast styles
paint frame by frame; over REST JSON, where BYTES elements are text, as base64) or, where
the model takes pixels, ``UINT8`` ``[H, W, 3]`` RGB pixels. Style images are the elements of input ``style`` (BYTES
``[N]``). Parameters (``core.style_options.PARAMS`` and the model's own) may be request
parameters or the photo input's parameters (the input's win); the service checks them as it
does TorchServe's, so the messages are the same. The answer is output ``stylized`` of the
input's kind: ``BYTES`` ``[1]`` encoded as asked (a clip: the painted clip; its
``content_type`` parameter says which; base64 text in a REST JSON response, raw bytes over
gRPC or REST's binary extension), or ``UINT8`` ``[H, W, 3]``; the reply's summary
becomes response parameters. Everything wrong raises ``InputError`` naming the problem.
"""

from __future__ import annotations

import base64
import struct
from typing import Any

import numpy as np
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from PIL import Image

from core import codec
from core.errors import InputError
from core.request import Request, RequestForm, decode_base64

IMAGE_INPUT = "image"
STYLE_INPUT = "style"
OUTPUT = "stylized"
#: Parameters the protocol itself uses (binary extension, client libraries), never ours.
PROTOCOL_PARAMETERS = frozenset({"binary_data_size", "binary_data_output", "binary_data", "content_type",
                                 "headers"})
ENCODED, PIXELS = "BYTES", "UINT8"


def plain_parameters(parameters: Any) -> dict[str, Any]:
    """Request or input parameters as a dict of Python values, from REST (a dict) or gRPC
    (``InferParameter`` messages). The protocol's gRPC parameters are bool, int64 or string;
    Triton's clients also send ``double_param`` for a float, which KServe's message does not
    have, so it arrives empty: refused with a message saying to send the number as text."""
    if not parameters:
        return {}
    plain = {}
    for key, value in parameters.items():
        if hasattr(value, "WhichOneof"):
            kind = value.WhichOneof("parameter_choice")
            if kind is None:
                raise InputError(f"parameter '{key}' arrived without a value: over gRPC the Open Inference Protocol "
                                 "carries bool, int64 or string parameters; send a number like 0.5 as the string '0.5'")
            value = getattr(value, kind)
        plain[key] = value
    return plain


def request_parameters(request: InferRequest, tensor: Any | None) -> dict[str, Any]:
    """The request's parameters overlaid with ``tensor``'s, protocol keys removed."""
    merged = {**plain_parameters(request.parameters), **plain_parameters(tensor.parameters if tensor else None)}
    return {key: value for key, value in merged.items() if key not in PROTOCOL_PARAMETERS}


def input_named(request: InferRequest, name: str):
    for item in request.inputs:
        if item.name == name:
            return item
    names = ", ".join(repr(item.name) for item in request.inputs) or "none"
    raise InputError(f"missing input '{name}' (got {names})")


def check_inputs(request: InferRequest, allowed: tuple[str, ...]) -> None:
    unknown = [item.name for item in request.inputs if item.name not in allowed]
    if unknown:
        raise InputError(f"unknown input(s) {', '.join(map(repr, unknown))}; this model takes {', '.join(allowed)}")


def check_outputs(request: InferRequest, allowed: tuple[str, ...] = (OUTPUT,)) -> None:
    unknown = [output.name for output in request.request_outputs or [] if output.name not in allowed]
    if unknown:
        raise InputError(f"unknown output(s) {', '.join(map(repr, unknown))}; this model returns "
                         f"{', '.join(allowed)}")


def wants_binary(request: InferRequest) -> bool:
    """Whether a BYTES output may be raw bytes: always over gRPC; over REST only when the
    client asked for the binary extension (a JSON response carries text only)."""
    if request.from_grpc:
        return True
    for output in request.request_outputs or []:
        if output.name == OUTPUT:
            return bool(output.binary_data)
    return bool(request.use_binary_outputs)


def as_array(tensor: Any) -> np.ndarray:
    """The tensor's data in its declared datatype and shape, or ``InputError`` saying why not."""
    try:
        return tensor.as_numpy()
    except (ValueError, TypeError, OverflowError, struct.error, InvalidInput, InferenceError) as error:
        raise InputError(f"input '{tensor.name}' data does not fit its datatype {tensor.datatype} and shape "
                         f"{list(tensor.shape)} ({error})") from None


def encoded_elements(tensor: Any, alternative: str = "") -> list[bytes | str]:
    """A BYTES input's elements: raw bytes, or text (REST JSON: base64). ``alternative``
    names another datatype the input may have, for the message."""
    if tensor.datatype != ENCODED:
        raise InputError(f"input '{tensor.name}' must be BYTES (an encoded image){alternative}, got {tensor.datatype}")
    return list(as_array(tensor).reshape(-1))


def read_request(request: InferRequest, form: RequestForm, photo: str = IMAGE_INPUT,
                 max_input_pixels: int | None = None) -> Request:
    """A v2 request as the services' ``Request``: the photo from input ``photo`` (pixels too
    where ``max_input_pixels`` is given), the style images when ``form`` takes them, the
    parameters."""
    check_inputs(request, (photo, STYLE_INPUT) if form.styles else (photo,))
    check_outputs(request)
    tensor = input_named(request, photo)
    params = request_parameters(request, tensor)
    if tensor.datatype == PIXELS and max_input_pixels is not None:
        image: bytes | Image.Image = pixels_to_photo(tensor, max_input_pixels)
    else:
        pixels = " or UINT8 [H, W, 3] pixels" if max_input_pixels is not None else ""
        elements = encoded_elements(tensor, pixels)
        if len(elements) != 1:
            raise InputError(f"input '{tensor.name}' must hold one encoded image (shape [1]), "
                             f"got shape {list(tensor.shape)}")
        image = encoded_bytes(tensor.name, elements[0])
    styles = [encoded_bytes(STYLE_INPUT, element)
              for element in encoded_elements(input_named(request, STYLE_INPUT))] if form.styles else []
    return Request(image, styles, params)


def encoded_bytes(name: str, element: Any) -> bytes:
    """One BYTES element as the image's bytes: raw, or base64 text (REST JSON)."""
    if isinstance(element, bytes):
        return element
    if isinstance(element, str):
        return decode_base64(name, element)
    raise InputError(f"input '{name}' must hold an encoded image, got {type(element).__name__} data")


def pixels_to_photo(tensor: Any, max_input_pixels: int) -> Image.Image:
    """A UINT8 [H, W, 3] tensor -> RGB image, its declared size checked against the upload
    limit before the data is read (the service checks the rest, as for a decoded upload)."""
    shape = list(tensor.shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise InputError(f"input '{tensor.name}' as UINT8 must have shape [H, W, 3] (RGB pixels), got {shape}")
    if shape[0] * shape[1] > max_input_pixels:
        raise codec.too_large((shape[1], shape[0]), max_input_pixels, " for uploads")
    return Image.fromarray(np.ascontiguousarray(as_array(tensor)), "RGB")


def pixels_output(painting: Image.Image, binary: bool) -> InferOutput:
    """The painting as output ``stylized``: UINT8 [H, W, 3] pixels."""
    return tensor_output(OUTPUT, np.asarray(painting, dtype=np.uint8), PIXELS, binary)


def encoded_output(data: bytes, media_type: str, binary: bool) -> InferOutput:
    """Output ``stylized`` BYTES [1]: the encoded image, as base64 text when not ``binary``."""
    parameters = {"content_type": media_type}
    if not binary:
        data, parameters["content_encoding"] = base64.b64encode(data), "base64"
    return tensor_output(OUTPUT, np.array([data], dtype=np.object_), ENCODED, binary, parameters)


def tensor_output(name: str, array: np.ndarray, datatype: str, binary: bool, parameters: dict | None = None):
    """An output with its data already serialized (raw bytes, or JSON values): KServe 0.21's
    ``to_grpc`` fails on an output still holding a numpy array (it tests the array's truth)."""
    output = InferOutput(name, list(array.shape), datatype, parameters=parameters)
    output.set_data_from_numpy(array, binary_data=binary)
    return output


def response(request: InferRequest, model: str, output: InferOutput, summary: dict[str, Any]) -> InferResponse:
    """The response: ``output``, and ``summary`` as response parameters (a value of a type the
    protocol's parameters lack, as text)."""
    parameters = {name: value if isinstance(value, (bool, int, str)) else str(value) for name, value in summary.items()}
    return InferResponse(response_id=request.id or "", model_name=model, infer_outputs=[output],
                         parameters=parameters, use_binary_outputs=wants_binary(request))
