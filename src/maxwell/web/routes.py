"""The page's two routes on the API's app: `GET /` (the page) and `GET /static/{name}`.

Rules:
- Only the files named in `PAGE_FILES` are served, each from this package's `static/` folder by
  a fixed path: a name not in the table is a 404, so no request can name a path (no traversal,
  no listing, no file the package did not ship).
- Each answer carries its own content type, `X-Content-Type-Options: nosniff` and a
  Content-Security-Policy that allows scripts, styles, images and requests from the page's own
  origin only (no inline script or style, no other host, no frames around it, no forms posted).
- The files are read once, on first use, and kept: they are the package's, and small.
- No token is needed: the page holds no secret. What it shows without one is what `/metrics`
  shows; the user gives it a token for the rest, sent as `Authorization: Bearer` (never in a URL).
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response
from starlette.exceptions import HTTPException

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",  # revalidated: an upgraded daemon serves its own page
}

_HTML = "text/html; charset=utf-8"
_JS = "text/javascript; charset=utf-8"
_CSS = "text/css; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"

# The name a URL uses -> (the file under static/, its content type). The page is "index.html".
PAGE_FILES: dict[str, tuple[str, str]] = {
    "index.html": ("index.html", _HTML),
    "maxwell.js": ("maxwell.js", _JS),
    "maxwell.css": ("maxwell.css", _CSS),
    "favicon.svg": ("favicon.svg", "image/svg+xml"),
    "uPlot.iife.min.js": ("vendor/uplot/uPlot.iife.min.js", _JS),
    "uPlot.min.css": ("vendor/uplot/uPlot.min.css", _CSS),
    "uPlot.LICENSE.txt": ("vendor/uplot/LICENSE", _TEXT),
}


@functools.cache
def _read(name: str) -> bytes:
    relative, _ = PAGE_FILES[name]
    return resources.files("maxwell.web").joinpath("static", *relative.split("/")).read_bytes()


def page_file(name: str) -> Response:
    """One of `PAGE_FILES` with its headers; any other name is a 404."""
    if name not in PAGE_FILES:
        raise HTTPException(404)
    return Response(_read(name), media_type=PAGE_FILES[name][1], headers=SECURITY_HEADERS)


def add_page_routes(app: FastAPI) -> None:
    """`GET /` and `GET /static/{name}` (left out of the OpenAPI document: they are the page,
    not the API; docs/web.md describes them)."""

    @app.get("/", include_in_schema=False, response_class=Response)
    def page() -> Response:
        return page_file("index.html")

    @app.get("/static/{name}", include_in_schema=False, response_class=Response)
    def static(name: str) -> Response:
        return page_file(name)
