"""The Open Inference Protocol (v2) side of the predictor: tensors and parameters in, tensors out.

A request carries the photo as input ``image``, either ``BYTES`` ``[1]`` (an encoded
JPEG/PNG/WebP; over REST JSON, where BYTES elements are text, as base64) or ``UINT8``
``[H, W, 3]`` RGB pixels. Parameters (``core.style_options.PARAMS`` and the model's own) may
be request parameters or the input's parameters (the input's win); they are validated by the
same ``core.request.parse_request`` as on TorchServe, so the messages are the same. The
answer is output ``stylized`` of the input's kind: ``BYTES`` ``[1]`` encoded as asked
(base64 text in a REST JSON response, raw bytes over gRPC or REST's binary extension), or
``UINT8`` ``[H, W, 3]``. Everything wrong raises ``InputError`` naming the problem.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from PIL import Image

from core import codec
from core.codec import Limits
from core.errors import InputError
from core.request import Param, parse_request

IMAGE_INPUT = "image"
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


def encoded_elements(tensor: Any) -> list[bytes | str]:
    """A BYTES input's elements: raw bytes, or text (REST JSON: base64)."""
    if tensor.datatype != ENCODED:
        raise InputError(f"input '{tensor.name}' must be BYTES (an encoded image), got {tensor.datatype}")
    return list(as_array(tensor).reshape(-1))


@dataclass
class Photo:
    """One request's photo and validated parameters; ``encoded`` says which kind came in."""

    image: Image.Image
    params: dict[str, Any]
    encoded: bool


def read_photo(request: InferRequest, params_spec: Mapping[str, Param], limits: Limits) -> Photo:
    """Input ``image`` (BYTES [1] or UINT8 [H, W, 3]) and the parameters -> a validated photo."""
    tensor = input_named(request, IMAGE_INPUT)
    raw = request_parameters(request, tensor)
    if tensor.datatype == ENCODED:
        elements = encoded_elements(tensor)
        if len(elements) != 1:
            raise InputError(f"input 'image' must hold one encoded image (shape [1]), got shape {list(tensor.shape)}")
        if not isinstance(elements[0], (bytes, str)):
            raise InputError(f"input 'image' must hold an encoded image, got {type(elements[0]).__name__} data")
        parsed = parse_request({IMAGE_INPUT: elements[0], **raw}, "", _is_image, params_spec, IMAGE_INPUT)
        params = _with_format(parsed.params)
        return Photo(codec.decode(parsed.image(IMAGE_INPUT), limits, params.get("max_side")), params, True)
    if tensor.datatype == PIXELS:
        params = _with_format(parse_request(raw, "", _is_image, params_spec, IMAGE_INPUT).params)
        return Photo(pixels_to_photo(tensor, limits, params.get("max_side")), params, False)
    raise InputError(f"input 'image' must be BYTES (an encoded image) or UINT8 [H, W, 3] pixels, "
                     f"got {tensor.datatype}")


def _is_image(name: str) -> bool:
    return name == IMAGE_INPUT


def _with_format(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "format": codec.parse_format(params.get("format")) or "png"}


def pixels_to_photo(tensor: Any, limits: Limits, max_side: int | None) -> Image.Image:
    """A UINT8 [H, W, 3] tensor -> RGB image, checked against the same limits as an upload
    (the declared shape first, before the data is read)."""
    shape = list(tensor.shape)
    if len(shape) != 3 or shape[2] != 3 or min(shape) < 1:
        raise InputError(f"input 'image' as UINT8 must have shape [H, W, 3] (RGB pixels), got {shape}")
    height, width = shape[0], shape[1]
    if height * width > limits.max_input_pixels:
        raise InputError(f"image is {width}x{height} = {width * height} pixels, over the "
                         f"{limits.max_input_pixels} pixel limit for uploads", status=413)
    image = Image.fromarray(np.ascontiguousarray(as_array(tensor)), "RGB")
    if max_side is not None:
        image = codec.fit_max_side(image, max_side)
    if image.width * image.height > limits.max_pixels:
        raise InputError(f"image is {image.width}x{image.height} = {image.width * image.height} pixels, over the "
                         f"{limits.max_pixels} pixel limit; downscale it or pass max_side", status=413)
    return image


def image_output(painting: Image.Image, photo: Photo, binary: bool) -> InferOutput:
    """The painting as output ``stylized``: encoded as asked for an encoded input (base64 text
    when the response is JSON), else UINT8 pixels."""
    if not photo.encoded:
        return tensor_output(OUTPUT, np.asarray(painting, dtype=np.uint8), PIXELS, binary)
    fmt = photo.params["format"]
    encoded = codec.encode(painting, fmt, photo.params["quality"], photo.params["png_compression"])
    return encoded_output(encoded, codec.MEDIA_TYPES[fmt], binary)


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


def response(request: InferRequest, model: str, outputs: list[InferOutput], parameters: dict) -> InferResponse:
    return InferResponse(response_id=request.id or "", model_name=model, infer_outputs=outputs,
                         parameters=parameters, use_binary_outputs=wants_binary(request))
