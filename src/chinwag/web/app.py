"""The WSGI application: the routes every web module declares, put together here, and JSON
errors for everything else."""

from __future__ import annotations

import json
import logging
from typing import Any

import bottle

from chinwag.config import Settings
from chinwag.web import admin, conversations, routes
from chinwag.web.api import Api, error_response
from chinwag.web.metrics import mount_metrics
from chinwag.web.openapi import build_openapi
from chinwag.web.pages import mount_pages
from chinwag.web.services import Services

log = logging.getLogger("chinwag.web")

ERROR_CODES = {401: "unauthorized", 403: "forbidden", 404: "not_found", 416: "bad_range"}


def declared_api() -> Api:
    """Every JSON route of the API: the contract's, the conversations', the operator's."""
    return Api([*routes.api.routes, *admin.api.routes, *conversations.api.routes])


def create_app(services: Services) -> bottle.Bottle:
    api = declared_api()
    app = bottle.Bottle(catchall=True)
    app.config["json.enable"] = False
    api.mount(app, services)
    mount_pages(app)
    mount_metrics(app, services.db, services.settings.metrics_token)
    openapi_document = json.dumps(build_openapi(api))

    def openapi() -> str:
        bottle.response.content_type = "application/json"
        return openapi_document

    app.route("/openapi.json", "GET", openapi)

    def not_found(_error: bottle.HTTPError) -> str:
        return error_response(404, "not_found", f"no route {bottle.request.path}")

    def method_not_allowed(error: bottle.HTTPError) -> str:
        allow = error.headers.get("Allow", "") if error.headers else ""
        headers = {"Allow": allow} if allow else None
        return error_response(
            405,
            "method_not_allowed",
            f"{bottle.request.method} is not allowed here",
            headers=headers,
        )

    def server_error(error: bottle.HTTPError) -> str:
        # Log the traceback for operators; the client only learns that it was our fault.
        log.error(
            "unhandled error on %s %s",
            bottle.request.method,
            bottle.request.path,
            exc_info=error.exception,
        )
        return error_response(500, "internal", "internal error; it has been logged")

    def other_error(error: bottle.HTTPError) -> str:
        # Errors raised by Bottle itself (static files, oversized bodies) in the contract's shape.
        status = error.status_code
        if status == 413:
            return error_response(413, "too_large", "request body too large")
        code = ERROR_CODES.get(status, "bad_request" if status < 500 else "internal")
        return error_response(status, code, str(error.body or error.status_line))

    app.error_handler.update({404: not_found, 405: method_not_allowed, 500: server_error})
    app.default_error_handler = other_error
    return app


def server_options(settings: Settings) -> dict[str, Any]:
    """waitress settings that belong to chinwag's limits: waitress buffers a whole request body
    before the application sees it, so it must refuse a huge one itself, from Content-Length
    (or, chunked, as it arrives), before reading it. Bodies a little over the limit still reach
    the application, which answers in the contract's error shape.

    waitress drops X-Forwarded-For unless told otherwise; with CHINWAG_TRUSTED_PROXIES set it is
    kept, and chinwag believes it only from those proxies (``web/addresses.py``)."""
    options: dict[str, Any] = {"max_request_body_size": 2 * settings.max_body_bytes}
    if settings.trusted_proxies:
        options["clear_untrusted_proxy_headers"] = False
    return options
