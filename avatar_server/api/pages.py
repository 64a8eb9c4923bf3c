"""The browser side served by the server itself, from ``web/``:

    GET /                     → /demo (or /admin when the demo is off)
    GET /widget.js            the embed widget (an ES module other sites load: CORS *)
    GET /demo                 the demo page (web/demo.html); /demo/config.json its site's key
    GET /admin                the admin console (web/admin.html)
    GET /static/{name}        assets in web/ (also /web/{name}): js, css, images
    GET /vendor/{name}        the Runway transport bundle (web/vendor/dist), when it was built

Names are one path segment of safe characters with a known extension; nothing else in the
tree is reachable. Files are sent with their content type, an ETag/Last-Modified (so
revalidation is a 304) and a short public cache lifetime; the HTML pages revalidate each
time. Pages get a CSP allowing only this server's scripts (``security.HEADER_POLICIES``);
the demo page's also lets media requests reach the engine's public URL.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from aiohttp import web

from ..appkeys import CATALOG, DEMO, SETTINGS, SITES
from ..demo import demo_site, preset_name
from ..errors import NotFound
from ..models.avatars import SESSION_PRESETS
from .security import PAGE_CSP

routes = web.RouteTableDef()

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
ASSET_CACHE = "public, max-age=300"
VENDOR_CACHE = "public, max-age=3600"
PAGE_CACHE = "no-cache"


def web_dir() -> Path:
    """``web/`` beside the package (a source checkout, editable install) or in the working
    directory (the Docker image installs the package and copies ``web/`` to ``/app/web``)."""
    for candidate in (Path(__file__).resolve().parents[2] / "web", Path.cwd() / "web"):
        if (candidate / "widget.js").is_file():
            return candidate
    return Path(__file__).resolve().parents[2] / "web"


def _safe_file(folder: Path, name: str) -> Path:
    if not _SAFE_NAME.match(name) or ".." in name or Path(name).suffix.lower() not in CONTENT_TYPES:
        raise NotFound("no such file", code="file_not_found")
    path = folder / name
    if not path.is_file():
        raise NotFound("no such file", code="file_not_found")
    return path


def _file(path: Path, cache: str, **extra: str) -> web.FileResponse:
    headers = {"Content-Type": CONTENT_TYPES[path.suffix.lower()], "Cache-Control": cache, **extra}
    return web.FileResponse(path, headers=headers)


@routes.get("/")
async def root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/demo" if request.app[SETTINGS].demo else "/admin")


@routes.get("/widget.js")
async def widget(request: web.Request) -> web.FileResponse:
    # loaded as a module script by other sites: a CORS fetch, so it needs ACAO
    return _file(_safe_file(web_dir(), "widget.js"), ASSET_CACHE, **{"Access-Control-Allow-Origin": "*"})


@routes.get("/static/{name}")
@routes.get("/web/{name}")
async def asset(request: web.Request) -> web.FileResponse:
    path = _safe_file(web_dir(), request.match_info["name"])
    return _file(path, PAGE_CACHE if path.suffix == ".html" else ASSET_CACHE)


@routes.get("/vendor/{name}")
async def vendor(request: web.Request) -> web.FileResponse:
    path = _safe_file(web_dir() / "vendor" / "dist", request.match_info["name"])
    return _file(path, VENDOR_CACHE, **{"Access-Control-Allow-Origin": "*",
                                         "Cross-Origin-Resource-Policy": "cross-origin"})


@routes.get("/demo")
async def demo_page(request: web.Request) -> web.FileResponse:
    if not request.app[SETTINGS].demo:
        raise NotFound("the demo is turned off on this server (AVATAR_SERVER_DEMO)", code="demo_disabled")
    return _file(_safe_file(web_dir(), "demo.html"), PAGE_CACHE, **{"Content-Security-Policy": _demo_csp(request)})


@routes.get("/demo/")
async def demo_slash(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/demo")


@routes.get("/demo/config.json")
async def demo_config(request: web.Request) -> web.Response:
    """The demo site's publishable key (public by design: it is in every embedding page) and
    what the page needs to offer a choice of avatars."""
    settings = request.app[SETTINGS]
    if not settings.demo:
        raise NotFound("the demo is turned off on this server (AVATAR_SERVER_DEMO)", code="demo_disabled")
    site = await demo_site(request.app[SITES], request.app[DEMO])
    if site is None:
        raise NotFound("the demo site was deleted; restarting the server creates it again",
                       code="demo_site_missing")
    # custom avatars an admin added to the demo site are shown by their names (from the cache)
    custom = [a for a in site.avatarIds if a not in SESSION_PRESETS]
    names = await request.app[CATALOG].avatars.names(custom)
    return web.json_response(
        {
            "publishableKey": site.publishableKey,
            "avatars": [{"id": a, "name": names.get(a) or preset_name(a)} for a in site.avatarIds],
            "allowedOrigins": site.allowedOrigins,
            "transport": "webrtc" if settings.engine_mode else "livekit",
            "maxDuration": site.maxDuration or settings.cap_seconds,
        },
        headers={"Cache-Control": "no-store"},
    )


@routes.get("/admin")
async def admin_page(request: web.Request) -> web.FileResponse:
    return _file(_safe_file(web_dir(), "admin.html"), PAGE_CACHE)


@routes.get("/admin/")
async def admin_slash(request: web.Request) -> web.Response:
    raise web.HTTPPermanentRedirect("/admin")


def _demo_csp(request: web.Request) -> str:
    """The page CSP, plus the server's public origin for media requests (the engine's RTC URL is
    built from it, which may differ from the address the visitor typed, e.g. localhost)."""
    parts = urlsplit(request.app[SETTINGS].base_url())
    origin = f"{parts.scheme}://{parts.netloc}"
    return PAGE_CSP.replace("connect-src 'self'", f"connect-src 'self' {origin}", 1)
