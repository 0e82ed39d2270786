"""The transport floor: the service's own uvicorn stack answering POST /predict and /stream with no work at all.

HTTP: it reads the whole request body and answers a fixed JSON body as long as a real prediction. WebSocket
(``/stream``): it accepts the upgrade and answers every text message with that same body as one text frame. Both go
through the same uvicorn settings as the service (uvloop, the httptools protocol of `runtime.server.protocol`,
websockets' sans-I/O protocol, no access log). What a request or message costs here is what any Python service on
this stack pays before doing anything: loopback, the kernel, HTTP or WebSocket framing, the ASGI hand-offs and the
socket write. It puts the "p50 at one connection <= 2x the bare model" targets in proportion: a path's p50 minus
its transport floor minus the bare model is the service's own work.

Run: ``python -m bench.http_floor --port 8002``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import uvicorn

from runtime.server.serve import uvicorn_options
from runtime.settings import Settings

#: About the size of a real /predict answer (700 bytes of JSON), so the socket write is comparable.
ANSWER = json.dumps({"note": "http floor: no validation, no model", "padding": "x" * 640}).encode()
READY = b'{"status":"ready"}'


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await _echo_answers(receive, send)
        return
    more = True
    while more:  # the whole body, as the service reads it
        message = await receive()
        more = message.get("more_body", False) and message["type"] == "http.request"
    body = ANSWER if scope["path"] == "/predict" else READY
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _echo_answers(receive: Any, send: Any) -> None:
    """Accept, then one fixed answer per text message until the client goes; binary frames close with 1003."""
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    text = ANSWER.decode()
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return
        if message.get("text") is None:
            await send({"type": "websocket.close", "code": 1003})
            return
        await send({"type": "websocket.send", "text": text})


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8002)
    args = p.parse_args()
    options: dict[str, Any] = {**uvicorn_options(Settings(host=args.host, port=args.port)), "log_level": "warning"}
    uvicorn.run(app, **options)


if __name__ == "__main__":
    main()
