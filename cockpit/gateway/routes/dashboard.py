"""The operator's dashboard, served from the package at ``/`` (no build step)."""

from __future__ import annotations

from pathlib import Path

from litestar import get
from litestar.response import Redirect
from litestar.static_files import create_static_files_router

__all__ = ["HANDLERS"]

STATIC = Path(__file__).resolve().parent.parent / "static"


@get("/", include_in_schema=False)
async def index() -> Redirect:
    return Redirect(path="/ui/index.html")


HANDLERS = [
    index,
    create_static_files_router(path="/ui", directories=[STATIC], html_mode=True, include_in_schema=False),
]
