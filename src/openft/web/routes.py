"""The dashboard: a small static app under /ui that talks to the /v1 API from the browser with the user's key.

The server only hands out files; every piece of data comes from the same public API the SDK uses, so the
dashboard can never see more than the key it was given. Assets sit flat in ``static/`` (package data is
``web/static/*``) and need no build step and no network.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from openft.api.errors import not_found

STATIC_DIR = Path(__file__).parent / "static"
UI_PREFIX = "/ui"
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
# The page is static and small; revalidating on every load means an upgraded server is picked up at once.
NO_STALE_ASSETS = {"Cache-Control": "no-cache"}
MAX_ASSET_NAME = 255

router = APIRouter(include_in_schema=False)


def asset_path(name: str) -> Path | None:
    """The file under STATIC_DIR that `name` refers to, or None for anything else.

    The name is looked up among the files that exist (the assets sit flat in one folder) instead of being
    handed to the filesystem: `..` tricks, NUL bytes and names longer than the OS allows are simply unknown
    names (404), never an OSError.
    """
    if len(name) > MAX_ASSET_NAME or Path(name).suffix not in MEDIA_TYPES:
        return None
    assets = {entry.name: entry for entry in STATIC_DIR.iterdir() if entry.is_file()}
    return assets[name].resolve() if name in assets else None


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse(UI_PREFIX + "/", status_code=307)


@router.get(UI_PREFIX)
def ui_without_slash() -> RedirectResponse:
    return RedirectResponse(UI_PREFIX + "/", status_code=307)


@router.api_route(UI_PREFIX + "/{name:path}", methods=["GET", "HEAD"])
def ui_asset(name: str) -> FileResponse:
    path = asset_path(name or "index.html")
    if path is None:
        raise not_found(f"The dashboard has no file '{name}'.")
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix], headers=NO_STALE_ASSETS)
