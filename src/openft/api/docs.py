"""Interactive API docs at /docs that work offline: Swagger UI's script and style come from the
`fastapi-offline` package's bundled copy (Swagger UI 5, which reads OpenAPI 3.1), served by this server
instead of a CDN.

/docs and /openapi.json need no key: they describe the routes, which are public in the source anyway, and hold
no data. Every call made from the page still needs a key (the page's "Authorize" button). Set
``OPENFT_DOCS=0`` to turn both off.
"""

from __future__ import annotations

import os
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from openft.api.errors import not_found

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
_MEDIA_TYPES = {"swagger-ui-bundle.js": "text/javascript; charset=utf-8", "swagger-ui.css": "text/css; charset=utf-8",
                "favicon.png": "image/png"}


def docs_enabled() -> bool:
    return os.environ.get("OPENFT_DOCS", "1").strip().lower() not in ("0", "false", "no", "off")


def _asset_dir():
    return resources.files("fastapi_offline").joinpath("static")


def install_docs(app: FastAPI) -> None:
    """Call on an app created with docs_url=None and redoc_url=None."""

    @app.get(DOCS_URL, include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{app.openapi_url}",
            title=f"{app.title} - API docs",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
        )

    @app.get(ASSETS_URL + "/{name}", include_in_schema=False)
    def swagger_asset(name: str) -> FileResponse:
        if name not in _MEDIA_TYPES:  # a fixed list: nothing the client names reaches the filesystem
            raise not_found(f"The docs have no file '{name}'.")
        return FileResponse(str(_asset_dir().joinpath(name)), media_type=_MEDIA_TYPES[name],
                            headers={"Cache-Control": "public, max-age=86400"})
