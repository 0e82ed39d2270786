"""``POST /predict`` and ``POST /predict/batch``: the seed's contract over the service core."""

from __future__ import annotations

import msgspec
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from runtime.decoding import decode_batch, decode_prediction
from runtime.errors import EdgeError
from runtime.http.errors import edge_error, json_response, validation_error
from runtime.http.request import deadline, parse_deadline, read_json, read_json_body, request_id
from runtime.service import Service


class PredictEndpoint:
    """``POST /predict`` as a plain ASGI app: the hot path builds no Starlette Response and no middleware frames.

    `EdgeMiddleware` calls it directly for ``POST /predict``; it is also the Starlette route's endpoint, so any
    other method still gets the router's 405. Errors become the one JSON error shape here, as the app's handlers
    would make them.
    """

    def __init__(self, service: Service) -> None:
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # One pass over the raw headers instead of a Request and its Headers (first occurrence wins, as there).
        content_type = length = api_key = deadline_ms = None
        for name, value in scope["headers"]:
            if name == b"content-type" and content_type is None:
                content_type = value.decode("latin-1")
            elif name == b"content-length" and length is None:
                length = value.decode("latin-1")
            elif name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"x-deadline-ms" and deadline_ms is None:
                deadline_ms = value.decode("latin-1")
        service = self.service
        try:
            with service.admission():
                service.authorize(api_key)
                body = await read_json(receive, content_type, length, service.settings.max_body_bytes)
                window = decode_prediction(body, service.settings.exchanges)
                [payload], _ = await service.infer(
                    [window], deadline=parse_deadline(deadline_ms), request_id=request_id(scope) or ""
                )
        except (EdgeError, ValidationError) as exc:
            request = Request(scope, receive)
            handler = edge_error if isinstance(exc, EdgeError) else validation_error
            response = await handler(request, exc)
            await response(scope, receive, send)
            return
        encoded = msgspec.json.encode(payload)  # probabilities are checked finite; everything else is bounded
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(encoded))],
            }
        )
        await send({"type": "http.response.body", "body": encoded})


async def predict_batch(request: Request) -> Response:
    service: Service = request.app.state.service
    with service.admission():
        service.authorize(request.headers.get("x-api-key"))
        body = await read_json_body(request, service.settings.max_body_bytes)
        windows = decode_batch(body, service.settings.exchanges)
        predictions, _ = await service.infer(
            windows, deadline=deadline(request), request_id=request_id(request.scope) or ""
        )
    return json_response(200, predictions)  # the seed's list[PredictionResponse], in request order
