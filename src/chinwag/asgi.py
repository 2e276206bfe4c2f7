"""The ASGI entry point: ``chinwag.asgi:application`` (``chinwag live``, and ``chinwag serve``'s
web child), configured from the same environment as the ``chinwag`` command.

One port serves everything: ``/v1/events`` and ``/v1/ws`` go to the live gateway (a coroutine per
connection), every other path to the Bottle WSGI app through a2wsgi's thread pool. The schema is
not migrated here; run ``chinwag migrate`` once per upgrade (``chinwag serve`` does).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from a2wsgi import WSGIMiddleware
from starlette.applications import Starlette
from starlette.routing import Mount

from chinwag.live import Gateway
from chinwag.web import Services, create_app

# Threads answering the WSGI part; streams never take one.
WSGI_THREADS = 16


def create_application(services: Services) -> Starlette:
    """The gateway's routes in front of the WSGI app; ``app.state.gateway`` is the gateway."""
    gateway = Gateway(services.db, services.settings)
    wsgi = WSGIMiddleware(create_app(services), workers=WSGI_THREADS)

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    # a2wsgi declares its own ASGI types, which mypy does not match with Starlette's.
    everything_else = Mount("/", app=wsgi)  # type: ignore[arg-type]
    app = Starlette(routes=[*gateway.routes(), everything_else], lifespan=lifespan)
    app.state.gateway = gateway
    return app


def from_env() -> Starlette:
    from chinwag.bootstrap import web_services
    from chinwag.config import Settings
    from chinwag.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(json_lines=settings.log_json)
    return create_application(web_services(settings))


def __getattr__(name: str) -> Any:
    # Built on first use, not at import: importing create_application must not open a database.
    if name == "application":
        application = from_env()
        globals()["application"] = application
        return application
    raise AttributeError(name)
