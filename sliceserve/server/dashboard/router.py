"""GET /dashboard: the page, a package data file read once (setuptools ships it: pyproject package-data).

The page holds no data: its script fetches /v1/status with the API key (from #key=... or typed in) as a
Bearer token. An auth layer should leave this path open as it leaves /health, because a browser's
navigation to the page cannot carry that header.
"""
from __future__ import annotations

from functools import lru_cache
from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@lru_cache(maxsize=1)
def page_html() -> str:
    return files("sliceserve.server.dashboard").joinpath("page.html").read_text(encoding="utf-8")


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
async def dashboard() -> HTMLResponse:
    return HTMLResponse(page_html(), headers={"Cache-Control": "no-store"})
