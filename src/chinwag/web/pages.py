"""The web client (``/``) and the operator page (``/admin``): static files shipped in the package.

Plain HTML, CSS and JavaScript modules, no build step. The Content-Security-Policy allows this
origin only, so the pages can fetch nothing from elsewhere (no CDN, no fonts, no trackers).
"""

from __future__ import annotations

from pathlib import Path

import bottle

STATIC_DIR = Path(__file__).parent / "static"

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def _static(name: str) -> bottle.HTTPResponse:
    answer = bottle.static_file(name, root=str(STATIC_DIR))
    answer.set_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    answer.set_header("X-Content-Type-Options", "nosniff")
    answer.set_header("Referrer-Policy", "no-referrer")
    # Revalidate every time: an upgrade of chinwag must never leave a stale client behind.
    answer.set_header("Cache-Control", "no-cache")
    result: bottle.HTTPResponse = answer
    return result


def mount_pages(app: bottle.Bottle) -> None:
    def client() -> bottle.HTTPResponse:
        return _static("index.html")

    def operator() -> bottle.HTTPResponse:
        return _static("admin.html")

    def asset(name: str) -> bottle.HTTPResponse:
        # Bottle says 403 for a path that climbs out; to a client it is simply not here.
        wanted = (STATIC_DIR / name).resolve()
        if not wanted.is_relative_to(STATIC_DIR.resolve()) or not wanted.is_file():
            raise bottle.HTTPError(404, f"no file {name}")
        return _static(name)

    def service_worker() -> bottle.HTTPResponse:
        # Served from the root, not /static/, so that its scope is the whole app: a worker's
        # scope may not reach above its script's directory (without Service-Worker-Allowed).
        return _static("sw.js")

    app.route("/", "GET", client)
    app.route("/sw.js", "GET", service_worker)
    app.route("/admin", "GET", operator)
    app.route("/static/<name:path>", "GET", asset)
