"""How `openft serve` hands out the dashboard, without a browser: redirects, assets, and nothing outside them."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from openft.api.app import create_app
from openft.web.routes import STATIC_DIR, asset_path


@pytest.fixture(scope="module")
def http():
    # No `with`: the lifespan (database, worker) is not needed to serve static files.
    return TestClient(create_app(prepare=False, embedded_worker=False))


def test_the_server_root_opens_the_dashboard(http):
    for path in ("/", "/ui"):
        response = http.get(path, follow_redirects=False)
        assert response.status_code == 307 and response.headers["location"] == "/ui/"
    page = http.get("/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text


def test_assets_have_types_browsers_accept_for_modules(http):
    script = http.get("/ui/app.js")
    assert script.headers["content-type"].startswith("text/javascript")
    assert http.get("/ui/app.css").headers["content-type"].startswith("text/css")
    assert http.head("/ui/app.js").status_code == 200


@pytest.mark.parametrize("name", ["../routes.py", "..%2Froutes.py", "missing.js", "%2e%2e/__init__.py"])
def test_nothing_but_the_assets_is_served(http, name):
    response = http.get(f"/ui/{name}")
    assert response.status_code == 404
    assert response.json()["error"]["message"]  # the usual OpenAI error envelope


def test_asset_lookup_refuses_paths_outside_the_static_folder():
    assert asset_path("index.html") == (STATIC_DIR / "index.html").resolve()
    assert asset_path("../routes.py") is None
    assert asset_path("/etc/passwd") is None


def test_every_module_the_page_imports_is_shipped():
    """Package data is `web/static/*` (flat): an import of a missing or nested file would break the page."""
    for script in STATIC_DIR.glob("*.js"):
        for target in re.findall(r'from "\./([^"]+)"', script.read_text()):
            assert "/" not in target and (STATIC_DIR / target).is_file(), f"{script.name} imports {target}"
