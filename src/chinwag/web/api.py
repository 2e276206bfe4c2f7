"""Routes declared once: the Bottle route, its input parsing and auth, and its OpenAPI entry.

A route function receives a ``RequestContext`` (the authenticated user, the validated body and
query) plus its path parameters, and returns a response model. Everything a client can get wrong
becomes a 4xx in the contract's error shape here, before the domain is called.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import bottle
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from chinwag.chat import accounts
from chinwag.chat.errors import ChinwagError, InvalidInput, RateLimited, Unauthorized
from chinwag.chat.models import User
from chinwag.web.services import Services

log = logging.getLogger("chinwag.web")

MAX_ID = 2**63 - 1
MAX_JSON_DEPTH = 32
_SURROGATE = re.compile("[\ud800-\udfff]")
_INT_PARAM = re.compile(r"<(\w+):int>")
_ANY_PARAM = re.compile(r"<(\w+)(?::\w+)?>")


class HttpError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


@dataclass
class RequestContext:
    services: Services
    user: User | None
    body: Any
    query: Any
    token_id: int | None = None  # the API token this request came with
    # Set by a handler to answer one of its route's ``also`` statuses instead of ``status``.
    status: int | None = None

    @property
    def member(self) -> User:
        assert self.user is not None, "route declared auth=True"
        return self.user

    @property
    def session(self) -> accounts.Session:
        assert self.user is not None and self.token_id is not None, "route declared auth=True"
        return accounts.Session(self.user, self.token_id)


RouteHandler = Callable[..., BaseModel | Iterator[str] | None]


@dataclass
class Route:
    method: str
    path: str  # Bottle syntax: /v1/chats/<chat_id:int>
    handler: RouteHandler
    summary: str
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    # Other success statuses with the same response model (e.g. 202: not finished yet).
    also: tuple[int, ...] = ()
    auth: bool = True
    errors: tuple[int, ...] = ()
    tag: str = "chat"
    # The handler may return an iterator of text (Server-Sent Events) instead of a model, and
    # the token may come as ?access_token= (EventSource cannot set headers).
    stream: bool = False

    @property
    def openapi_path(self) -> str:
        return _ANY_PARAM.sub(r"{\1}", self.path)

    @property
    def path_params(self) -> list[str]:
        return _INT_PARAM.findall(self.path)


@dataclass
class Api:
    routes: list[Route] = field(default_factory=list)

    def route(
        self, method: str, path: str, *, summary: str, **options: Any
    ) -> Callable[[RouteHandler], RouteHandler]:
        def register(handler: RouteHandler) -> RouteHandler:
            self.routes.append(Route(method, path, handler, summary, **options))
            return handler

        return register

    def mount(self, app: bottle.Bottle, services: Services) -> None:
        for route in self.routes:
            app.route(route.path, route.method, _endpoint(route, services))


def _endpoint(route: Route, services: Services) -> Callable[..., str | Iterator[str]]:
    def endpoint(**path_params: int | str) -> str | Iterator[str]:
        response = bottle.response
        response.content_type = "application/json"
        try:
            for name in route.path_params:  # the <name:int> ones; <username> is text
                value = path_params[name]
                if not isinstance(value, int) or not 0 < value <= MAX_ID:
                    raise HttpError(404, "not_found", f"no such {name.removesuffix('_id')}")
            session = _authenticate(services, route.stream) if route.auth else None
            context = RequestContext(
                services=services,
                user=session.user if session else None,
                body=_parse_body(route, services) if route.body else None,
                query=_parse_query(route) if route.query else None,
                token_id=session.token_id if session else None,
            )
            result = route.handler(context, **path_params)
            assert context.status is None or context.status in route.also, context.status
            response.status = context.status or route.status
            if result is None:
                return ""
            if isinstance(result, BaseModel):
                return result.model_dump_json()
            return result  # a stream route's iterator of text
        except HttpError as exc:
            return error_response(exc.status, exc.code, exc.message, headers=exc.headers)
        except RateLimited as exc:
            headers = {"Retry-After": str(exc.retry_after)}
            return error_response(exc.status, exc.code, exc.message, headers=headers)
        except ChinwagError as exc:
            return error_response(exc.status, exc.code, exc.message, field=exc.field)
        except (OperationalError, PoolTimeout) as exc:
            # The database is down or restarting: say so quickly and let the client retry.
            log.warning("database unavailable: %s", type(exc).__name__)
            return error_response(
                503,
                "unavailable",
                "the database is unavailable; try again shortly",
                headers={"Retry-After": "1"},
            )

    endpoint.__name__ = route.handler.__name__
    return endpoint


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> str:
    response = bottle.response
    response.status = status
    response.content_type = "application/json"
    for name, value in (headers or {}).items():
        response.set_header(name, value)
    error: dict[str, Any] = {"code": code, "message": message}
    if field:
        error["field"] = field
    return json.dumps({"error": error})


def _authenticate(services: Services, token_in_query: bool = False) -> accounts.Session:
    header = bottle.request.get_header("Authorization", "")
    if not header and token_in_query and bottle.request.query.get("access_token"):
        header = "Bearer " + bottle.request.query.get("access_token", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>' (POST /v1/tokens gives one)")
    idle_seconds = services.settings.token_idle_days * 86400
    return accounts.authenticate_token(services.db, token.strip(), idle_seconds=idle_seconds)


def _parse_body(route: Route, services: Services) -> BaseModel:
    assert route.body is not None
    request = bottle.request
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise HttpError(415, "unsupported_media_type", "send the body as application/json")
    raw = read_body(request.environ, services.settings.max_body_bytes)
    try:
        document = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise HttpError(400, "bad_request", "the body is not valid UTF-8") from None
    except RecursionError:
        raise HttpError(400, "bad_request", "the JSON is nested too deeply") from None
    except ValueError as exc:
        raise HttpError(400, "bad_request", f"malformed JSON: {exc}") from None
    _check_document(document)
    if not isinstance(document, dict):
        raise HttpError(422, "invalid_input", "the body must be a JSON object")
    return _validate(route.body, document)


def read_body(environ: dict[str, Any], limit: int) -> bytes:
    """The request body, refused (413) without reading it when Content-Length says it is too
    large, and never read past ``limit`` + 1 bytes otherwise (a chunked body under gunicorn has
    no Content-Length). Bottle's own ``request.body`` would spool all of it to disk first."""
    too_large = HttpError(413, "too_large", f"request body over {limit} bytes")
    stream = environ.get("wsgi.input")
    declared = str(environ.get("CONTENT_LENGTH") or "").strip()
    if declared:
        try:
            length = int(declared)
        except ValueError:
            raise HttpError(400, "bad_request", "Content-Length is not a number") from None
        if length > limit:
            raise too_large
        return _read_up_to(stream, length)
    raw = _read_up_to(stream, limit + 1)
    if len(raw) > limit:
        raise too_large
    return raw


def _read_up_to(stream: Any, size: int) -> bytes:
    if stream is None or size <= 0:
        return b""
    parts: list[bytes] = []
    left = size
    while left > 0:
        part = stream.read(min(left, 65536))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _check_document(document: Any) -> None:
    """Refuse what no route needs and no database can store, before anything looks at it.

    No request body nests more than a few levels, so a deep one is an attack or a bug; and a NUL
    character or an unpaired surrogate is valid JSON but PostgreSQL rejects the first and UTF-8
    cannot encode the second, which would otherwise surface as a 500 after validation passed.
    """
    pending: list[tuple[Any, str, int]] = [(document, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise HttpError(400, "bad_request", "the JSON is nested too deeply")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_text(key, where or "body")
                pending.append((item, f"{where}.{key}" if where else key, depth + 1))
        elif isinstance(value, list):
            pending.extend((item, f"{where}.{i}", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(value, where or "body")


def _check_text(text: str, where: str) -> None:
    if "\x00" in text or _SURROGATE.search(text):
        raise InvalidInput(
            f"{where}: text must not contain NUL characters or unpaired surrogates", field=where
        )


def _parse_query(route: Route) -> BaseModel:
    assert route.query is not None
    try:
        query = dict(bottle.request.query.decode().items())
    except UnicodeError:
        raise HttpError(400, "bad_request", "the query string is not valid UTF-8") from None
    return _validate(route.query, query)


def _validate(model: type[BaseModel], document: dict[str, Any]) -> BaseModel:
    try:
        return model.model_validate(document)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInput(f"{where}: {first['msg']}", field=where or None) from None
