"""The operator's dashboard, served from the package at ``/`` (no build step)."""

from __future__ import annotations

from pathlib import Path

from litestar import Response, get
from litestar.datastructures import CacheControlHeader
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

__all__ = ["HANDLERS"]

STATIC = Path(__file__).resolve().parent.parent / "static"

#: the page's own policy (also in its <meta>, which cannot state frame-ancestors):
#: no framing (clickjacking an operator's Approve), no content-type guessing
_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


async def _secured(response: Response) -> Response:
    response.headers.update(_HEADERS)
    return response


@get("/", include_in_schema=False)
async def index() -> Redirect:
    return Redirect(path="/ui/index.html")


HANDLERS = [
    index,
    create_static_files_router(
        path="/ui", directories=[STATIC], html_mode=True, include_in_schema=False, after_request=_secured,
        # Revalidated on every load (a 304 when unchanged): after an upgrade the browser
        # never runs new modules beside cached old ones.
        cache_control=CacheControlHeader(no_cache=True),
    ),
]
