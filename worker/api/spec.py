"""Small builders for the OpenAPI fragments each route module declares in `openapi()`.

A route module returns `{"paths": {...}, "components": {"schemas": {...}}}`;
`worker.api.docs` merges the fragments of every module the app mounts into /openapi.json.
"""

from __future__ import annotations

from typing import Any

ERROR = {"$ref": "#/components/schemas/Error"}
JSON = "application/json"

# The statuses every authenticated route may answer, with the error shape.
AUTH_ERRORS = {401: "missing or unknown API key", 403: "the key's scope is too low"}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def param(
    name: str, where: str, description: str, schema: dict[str, Any], required: bool = False
) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "description": description,
        "required": required or where == "path",
        "schema": schema,
    }


ID = param("id", "path", "The connection id.", {"type": "string", "maxLength": 128})


def operation(
    summary: str,
    scope: str | None,
    ok: tuple[int, str, dict[str, Any] | None],
    *,
    tag: str,
    description: str = "",
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    errors: dict[int, str] | None = None,
) -> dict[str, Any]:
    """One operation: `scope` None means no API key needed; `ok` is (status, text, schema)."""
    status, text, schema = ok
    responses: dict[str, Any] = {str(status): _response(text, schema)}
    for code, meaning in sorted({**(AUTH_ERRORS if scope else {}), **(errors or {})}.items()):
        responses[str(code)] = _response(meaning, ERROR)
    found: dict[str, Any] = {
        "summary": summary,
        "tags": [tag],
        "parameters": list(params),
        "responses": responses,
    }
    if description:
        found["description"] = description
    if scope is not None:
        found["security"] = [{"bearer": []}]
        found["x-scope"] = scope
    if body is not None:
        found["requestBody"] = {"required": True, "content": {JSON: {"schema": body}}}
    return found


def _response(text: str, schema: dict[str, Any] | None) -> dict[str, Any]:
    if schema is None:
        return {"description": text}
    return {"description": text, "content": {JSON: {"schema": schema}}}


def obj(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


STRING = {"type": "string"}
NUMBER = {"type": "number"}
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_NUMBER = {"type": ["number", "null"]}
