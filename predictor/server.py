"""KServe's ``ModelServer`` with this project's models, on a chosen address, answering our errors.

What is changed from the stock server, and why:

- both listeners bind to ``host`` (stock KServe 0.21 binds REST to ``0.0.0.0`` and gRPC to
  ``[::]`` with no option): a developer's or a test's server stays on loopback;
- REST requests in the binary extension keep their raw tensor bytes (stock 0.21 turns every
  binary input back into JSON values, which fails with a 500 for a BYTES input that is not
  UTF-8 text, i.e. any encoded image, and makes a pixel tensor a Python list);
- ``InputError`` answers with its own 4xx status and message, ``Overloaded`` with 503 and
  ``Retry-After`` (REST) or ``INVALID_ARGUMENT`` / ``UNAVAILABLE`` (gRPC), ``Unavailable``
  with 501 or ``UNIMPLEMENTED``, not a 500;
- ``GET /v2/models/<name>`` adds the model's parameters and runtime to the v2 metadata.

Stopping: SIGTERM or SIGINT ends uvicorn gracefully, then KServe's own handler stops gRPC
and unloads the models; the process exits 0.
"""

from __future__ import annotations

import asyncio
from concurrent import futures
from typing import Any

import orjson
from fastapi import Response
from fastapi.responses import JSONResponse
from grpc import StatusCode, aio
from kserve import ModelServer
from kserve.constants.constants import FASTAPI_APP_IMPORT_STRING
from kserve.model_server import app
from kserve.model_server import args as kserve_args
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.protocol.rest.server import RESTServer

from core.errors import InputError, Overloaded, Unavailable
from predictor.models import StyleModel

#: Errors that carry their own HTTP status and JSON body (``status``, ``as_json()``); 501
#: ``Unavailable`` is e.g. the Gatys family's "no loss-network weights here".
ANSWERED = [InputError, Overloaded, Unavailable]


def request_from_binary(body: bytes, json_length: int, model_name: str) -> InferRequest:
    """A REST request in the binary extension (JSON header, then the tensors' raw bytes) ->
    ``InferRequest`` whose binary inputs keep their raw bytes."""
    if not 0 < json_length <= len(body):
        raise InputError(f"Inference-Header-Content-Length {json_length} does not fit a {len(body)}-byte body")
    try:
        header = orjson.loads(body[:json_length])
        inputs, raw = [], []
        offset = json_length
        for item in header["inputs"]:
            parameters = dict(item.get("parameters") or {})
            tensor = InferInput(item["name"], list(item["shape"]), str(item["datatype"]), item.get("data"), parameters)
            chunk = None
            if item.get("data") is None:
                size = parameters.get("binary_data_size")
                if not isinstance(size, int) or size < 0 or offset + size > len(body):
                    raise InputError(f"input '{tensor.name}' has no data and no binary_data_size that fits the body")
                chunk, offset = body[offset:offset + size], offset + size
            inputs.append(tensor)
            raw.append(chunk)
        outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in header.get("outputs") or []]
    except InputError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(f"malformed inference request header ({type(error).__name__}: {error})") from None
    return InferRequest(model_name, inputs, request_id=header.get("id"), parameters=header.get("parameters"),
                        raw_inputs=raw if any(chunk is not None for chunk in raw) else None,
                        request_outputs=outputs or None)


class StyleDataPlane(DataPlane):
    def decode_inference_request(self, body, headers, model_name):
        if isinstance(body, bytes):  # not parsed as JSON by FastAPI (binary extension, or no JSON type)
            if not body:
                raise InputError("empty request body: send a v2 inference request (JSON)")
            length = headers.get("inference-header-content-length", str(len(body)))  # none: all JSON
            if not str(length).isdigit():
                raise InputError(f"Inference-Header-Content-Length must be a byte count, got {length!r}")
            return request_from_binary(body, int(length), model_name)
        return super().decode_inference_request(body, headers, model_name)

    async def model_metadata(self, model_name: str) -> dict:
        metadata = await super().model_metadata(model_name)
        model = self.get_model_from_registry(model_name)
        return {**metadata, "platform": getattr(model, "platform", "")}


async def _answer_error(_request, error: Exception) -> JSONResponse:
    """REST: our error's status, TorchServe's JSON body plus KServe's ``error`` key."""
    headers = {}
    if getattr(error, "retry_after", None) is not None:
        headers["Retry-After"] = str(int(error.retry_after))
    return JSONResponse(status_code=error.status, content={"error": str(error), **error.as_json()}, headers=headers)


class StyleErrorsToStatus(ExceptionToStatusInterceptor):
    """gRPC: a bad request is ``INVALID_ARGUMENT`` with our message; overload ``UNAVAILABLE``
    with ``retry-after`` trailing metadata; no weights ``UNIMPLEMENTED``; the rest as KServe does."""

    async def handle_exception(self, ex: Exception, request_or_iterator: Any, context, method_name: str):
        if isinstance(ex, InputError):
            await context.abort(StatusCode.INVALID_ARGUMENT, str(ex))
        elif isinstance(ex, Overloaded):
            context.set_trailing_metadata((("retry-after", str(int(ex.retry_after))),))
            await context.abort(StatusCode.UNAVAILABLE, str(ex))
        elif isinstance(ex, Unavailable):
            await context.abort(StatusCode.UNIMPLEMENTED, str(ex))
        else:
            await super().handle_exception(ex, request_or_iterator, context, method_name)


class BoundGRPCServer(GRPCServer):
    """KServe's gRPC server, listening on ``host`` only, with our error mapping."""

    def __init__(self, host: str, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.host = host

    async def start(self, max_workers: int) -> None:
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), StyleErrorsToStatus()),
            options=[("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                     ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length"))],
        )
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        self._server.add_insecure_port(f"{self.host}:{self._port}")
        await self._server.start()
        await self._server.wait_for_termination()


class StyleModelServer(ModelServer):
    """``kserve.ModelServer`` with one REST worker and one gRPC server, both on ``host``."""

    def __init__(self, host: str, http_port: int, grpc_port: int, grace_period: int = 30):
        super().__init__(http_port=http_port, grpc_port=grpc_port, workers=1, grace_period=grace_period)
        self.host = host
        self.dataplane = StyleDataPlane(model_registry=self.registered_models)

    def _add_routes(self) -> None:
        for error in ANSWERED:
            app.add_exception_handler(error, _answer_error)

        async def model_metadata(model_name: str) -> Response:
            metadata = await self.dataplane.model_metadata(model_name)
            model = self.dataplane.get_model_from_registry(model_name)
            extension = model.metadata_extension() if isinstance(model, StyleModel) else {}
            # orjson: an infinite PSNR (a runtime measured against itself) becomes null.
            return Response(orjson.dumps({**metadata, **extension}), media_type="application/json")

        # Ahead of KServe's own route for the same path (added when the REST server starts).
        app.add_api_route("/v2/models/{model_name}", model_metadata, methods=["GET"])

    def start(self, models: list[StyleModel]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        self._add_routes()
        self._rest_server = RESTServer(
            FASTAPI_APP_IMPORT_STRING, self.dataplane, self.model_repository_extension, self.http_port,
            grace_period=self.grace_period, event_loop=self.event_loop, timeout_keep_alive=self.timeout_keep_alive,
        )
        self._rest_server.config.host = self.host
        self._grpc_server = BoundGRPCServer(self.host, self.grpc_port, self.dataplane, self.model_repository_extension,
                                            kwargs=vars(kserve_args), grace_period=self.grace_period)
        self.servers = [self._rest_server.start(), self._grpc_server.start(self.max_threads)]
        self.setup_event_loop()
        self.register_signal_handler()
        asyncio.run(self._serve())

