"""/openapi.json: a valid OpenAPI 3.1 document that lists every route of the contract."""

from __future__ import annotations

from typing import Any

import pytest
from tests.conftest import Api

from chinwag.web.app import declared_api

# The JSON API of the public contract; /metrics and /openapi.json are not JSON
# routes of `api` and are tested where they are built.
CONTRACT = {
    ("post", "/v1/users"),
    ("post", "/v1/tokens"),
    ("get", "/v1/me"),
    ("post", "/v1/devices"),
    ("get", "/v1/devices"),
    ("delete", "/v1/devices/{device_id}"),
    ("post", "/v1/chats"),
    ("get", "/v1/chats"),
    ("get", "/v1/chats/{chat_id}"),
    ("post", "/v1/chats/{chat_id}/members"),
    ("delete", "/v1/chats/{chat_id}/members/{username}"),
    ("put", "/v1/chats/{chat_id}/settings"),
    ("post", "/v1/chats/{chat_id}/messages"),
    ("get", "/v1/chats/{chat_id}/messages"),
    ("get", "/v1/messages/{message_id}/deliveries"),
    ("post", "/groupchat/send"),
    ("get", "/healthz"),
    # Conversations (docs/conversations.md).
    ("post", "/v1/chats/{chat_id}/read"),
    ("get", "/v1/events"),
    ("get", "/v1/push/vapid-public-key"),
}
METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


@pytest.fixture
def document(api: Api) -> dict[str, Any]:
    response = api.anonymous.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


def operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method, path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def test_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    """openapi-spec-validator accepts the document as OpenAPI 3.1."""
    validator = pytest.importorskip("openapi_spec_validator")
    assert document["openapi"].startswith("3.1")
    validator.validate(document)


def test_every_contract_route_is_listed(document: dict[str, Any]) -> None:
    """Every route of the contract, and every declared route, appears with its method and path."""
    listed = set(operations(document))
    assert listed >= CONTRACT, CONTRACT - listed
    declared_routes = {(r.method.lower(), r.openapi_path) for r in declared_api().routes}
    assert listed >= declared_routes


def test_every_operation_documents_its_responses(document: dict[str, Any]) -> None:
    """Each operation has a success response, JSON error responses, and its auth and parameters."""
    schemas = document["components"]["schemas"]
    for (method, path), operation in operations(document).items():
        responses = operation["responses"]
        assert any(code.startswith("2") for code in responses), (method, path)
        private = (method, path) not in {
            ("post", "/v1/users"),
            ("post", "/v1/tokens"),
            ("get", "/v1/push/vapid-public-key"),  # a public key, wanted before signing in
        }
        if private and path != "/healthz":
            assert operation["security"] == [{"bearer": []}], (method, path)
            assert "401" in responses, (method, path)
        for code, response in responses.items():
            if code.startswith(("4", "5")):
                ref = response["content"]["application/json"]["schema"]["$ref"]
                assert ref.rsplit("/", 1)[-1] in schemas
        for name in (part[1:-1] for part in path.split("/") if part.startswith("{")):
            assert any(
                p["name"] == name and p["in"] == "path" and p["required"]
                for p in operation["parameters"]
            ), (method, path, name)
        if "requestBody" in operation:
            for code in ("400", "413", "415", "422"):
                assert code in responses, (method, path, code)


def test_history_query_parameters_are_documented(document: dict[str, Any]) -> None:
    """The history route documents `before` and `limit` with their bounds."""
    operation = document["paths"]["/v1/chats/{chat_id}/messages"]["get"]
    query = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert set(query) == {"before", "limit"}
    assert query["limit"]["schema"]["maximum"] == 200
