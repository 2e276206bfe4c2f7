"""/openapi.json, generated from the declared routes and their pydantic schemas."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from chinwag import __version__
from chinwag.web.api import Api, Route
from chinwag.web.schemas import ErrorResponse

REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "Malformed request",
    401: "Missing or invalid token",
    403: "Not allowed",
    404: "Not found (or not visible to you)",
    409: "Conflict",
    413: "Body too large",
    415: "Body is not application/json",
    422: "Invalid input",
    429: "Too many requests",
    503: "Database unavailable",
}
SUCCESS_TEXT = {202: "Accepted, not finished yet: ask again where the answer says"}
# Every route with a JSON body can fail these ways before its own logic runs.
BODY_ERRORS = (400, 413, 415, 422)


def build_openapi(api: Api) -> dict[str, Any]:
    models: set[type[BaseModel]] = {ErrorResponse}
    for route in api.routes:
        models.update(m for m in (route.body, route.response) if m is not None)
    ordered = sorted(models, key=lambda m: m.__name__)
    modes: list[tuple[type[BaseModel], Any]] = [
        (m, "validation" if _is_request(m, api) else "serialization") for m in ordered
    ]
    refs, schema = models_json_schema(modes, ref_template=REF)
    ref_of = {model: refs[(model, mode)]["$ref"] for model, mode in modes}
    paths: dict[str, dict[str, Any]] = {}
    for route in api.routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(route, ref_of)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "chinwag",
            "version": __version__,
            "description": "Group chat whose notifications always arrive.",
        },
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _is_request(model: type[BaseModel], api: Api) -> bool:
    return any(route.body is model for route in api.routes)


def _operation(route: Route, ref_of: dict[type[BaseModel], str]) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "operationId": route.handler.__name__,
        "summary": route.summary,
        "tags": [route.tag],
        "parameters": _parameters(route),
        "responses": {},
    }
    if route.auth:
        operation["security"] = [{"bearer": []}]
    if route.body is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": ref_of[route.body]}}},
        }
    if route.response is not None:
        content: dict[str, Any] = {"application/json": {"schema": {"$ref": ref_of[route.response]}}}
        if route.stream:
            content["text/event-stream"] = {"schema": {"type": "string"}}
        operation["responses"][str(route.status)] = {"description": "Success", "content": content}
        for status in route.also:
            operation["responses"][str(status)] = {
                "description": SUCCESS_TEXT.get(status, "Success"),
                "content": content,
            }
    else:
        operation["responses"][str(route.status)] = {"description": "Done, no content"}
    statuses = set(route.errors)
    if route.body is not None:
        statuses.update(BODY_ERRORS)
    if route.auth:
        statuses.update((401, 503))
    if route.query is not None:
        statuses.add(422)
    if route.path_params:
        statuses.add(404)
    for status in sorted(statuses):
        operation["responses"][str(status)] = {
            "description": ERROR_TEXT.get(status, "Error"),
            "content": {"application/json": {"schema": {"$ref": ref_of[ErrorResponse]}}},
        }
    return operation


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters: list[dict[str, Any]] = []
    for name in route.path_params:
        parameters.append(
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1},
            }
        )
    if "<username>" in route.path:
        parameters.append(
            {"name": "username", "in": "path", "required": True, "schema": {"type": "string"}}
        )
    if route.query is not None:
        schema = route.query.model_json_schema()
        for name, field_schema in schema.get("properties", {}).items():
            parameters.append(
                {
                    "name": name,
                    "in": "query",
                    "required": name in schema.get("required", []),
                    "schema": field_schema,
                }
            )
    return parameters
