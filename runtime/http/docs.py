"""``GET /docs``: Swagger UI over ``/openapi.json``, served entirely from files shipped in this package.

An edge box may have no internet, so nothing is loaded from a CDN: the page, Swagger UI's script and stylesheet and
the favicons come from this service. The assets are swagger-ui-dist (Apache-2.0) copied byte for byte into
``runtime/http/swagger_ui/`` (see its README.md for the version, source and checksums); only the standalone bundle and
its stylesheet are shipped (about 1.9 MB), not the whole distribution.

The assets are immutable for a given release: the page asks for them with ``?v=<release>`` and they are served with
a one-year ``Cache-Control``, so a browser fetches them once. The page itself is ``no-cache`` and carries a
Content-Security-Policy that allows nothing but this origin: Swagger UI cannot reach another host even if
configured to.
"""

from __future__ import annotations

import functools
import hashlib
from importlib.resources import files
from typing import Final

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runtime import __version__

#: The vendored swagger-ui-dist release (runtime/http/swagger_ui/README.md says where it came from).
SWAGGER_UI_VERSION: Final = "5.35.0"
#: Served asset name -> media type. Only these names are served; nothing else in the folder is reachable.
ASSETS: Final = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "swagger-initializer.js": "text/javascript; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_TAG = f"{__version__}-{SWAGGER_UI_VERSION}"  # changes whenever the page or an asset may have changed

# Relative URLs ("docs/static/...", "openapi.json"): they resolve against /docs to the service's own paths, and
# still do behind a proxy that mounts the service under a prefix.
_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>NeuralTrade Edge API</title>
<link rel="stylesheet" href="docs/static/swagger-ui.css?v={_TAG}">
<link rel="icon" type="image/png" sizes="32x32" href="docs/static/favicon-32x32.png?v={_TAG}">
<link rel="icon" type="image/png" sizes="16x16" href="docs/static/favicon-16x16.png?v={_TAG}">
</head>
<body>
<div id="swagger-ui"></div>
<script src="docs/static/swagger-ui-bundle.js?v={_TAG}"></script>
<script src="docs/static/swagger-initializer.js?v={_TAG}"></script>
</body>
</html>
""".encode()

# A file rather than an inline <script>, so the page's CSP can forbid inline scripts. validatorUrl null: the
# default would load a badge from validator.swagger.io. BaseLayout: no top bar (and no URL box to load other specs).
_INITIALIZER = b"""window.onload = function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    displayRequestDuration: true,
    defaultModelsExpandDepth: 0
  });
};
"""

_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_PAGE_HEADERS: Final = {
    "Cache-Control": "no-cache",
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_ASSET_CACHE = "public, max-age=31536000, immutable"


@functools.cache
def _asset(name: str) -> tuple[bytes, str]:
    """The asset's bytes and its ETag, read once (on first request, not at import)."""
    body = (
        _INITIALIZER if name == "swagger-initializer.js" else (files("runtime.http") / "swagger_ui" / name).read_bytes()
    )
    return body, f'"{hashlib.sha256(body).hexdigest()[:32]}"'


async def docs_page(request: Request) -> Response:
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=_PAGE_HEADERS)


async def docs_asset(request: Request) -> Response:
    name = request.path_params["name"]
    if name not in ASSETS:
        raise HTTPException(404, f"no documentation asset '{name[:100]}'")
    body, etag = _asset(name)
    headers = {"Cache-Control": _ASSET_CACHE, "ETag": etag, "X-Content-Type-Options": "nosniff"}
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=ASSETS[name], headers=headers)


routes: list[Route] = [
    Route("/docs", docs_page, methods=["GET"]),
    Route("/docs/static/{name}", docs_asset, methods=["GET"]),
]
