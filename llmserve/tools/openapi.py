"""The .cog/openapi_schema.json that `cog build` writes, made here from predict.py's real signature.

The Cog server validates inputs, serves /openapi.json and allows SSE only when that file exists.
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(".cog") / "openapi_schema.json"

_JSON_OK = {"application/json": {"schema": {}}}
_VALIDATION_ERROR = {
    "description": "Validation Error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HTTPValidationError"}}},
}


def build_schema(module_name: str = "predict", class_name: str = "Predictor") -> dict[str, Any]:
    """Inspect `module_name.class_name.run` as Cog's SDK does and return the OpenAPI document."""
    from cog import __version__ as cog_version
    from cog import _inspector  # the SDK's own signature reader, pinned with the SDK version

    info = _inspector.create_predictor(module_name, class_name)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for field in sorted(info.inputs.values(), key=lambda f: f.order):
        properties[field.name] = _input_property(field)
        if field.default is None and not _is_optional(field):
            required.append(field.name)
    input_schema: dict[str, Any] = {"properties": properties, "title": "Input", "type": "object"}
    if required:
        input_schema["required"] = required

    predictions_post: dict[str, Any] = {
        "summary": "Predict",
        "description": "Run a single prediction on the model",
        "operationId": "predict_predictions_post",
        "requestBody": {
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionRequest"}}}
        },
        "responses": {
            "200": {
                "description": "Successful Response",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictionResponse"}}},
            },
            "422": _VALIDATION_ERROR,
        },
    }
    if _is_streaming(module_name, class_name):
        predictions_post["x-cog-streaming"] = True

    return {
        "openapi": "3.0.2",
        "info": {"title": "Cog", "version": cog_version},
        "paths": {
            "/": {"get": _simple_get("Root", "root__get")},
            "/health-check": {"get": _simple_get("Healthcheck", "healthcheck_health_check_get")},
            "/predictions": {"post": predictions_post},
            "/predictions/{prediction_id}/cancel": {
                "post": {
                    "summary": "Cancel",
                    "operationId": "cancel_predictions__prediction_id__cancel_post",
                    "parameters": [
                        {
                            "required": True,
                            "schema": {"title": "Prediction Id", "type": "string"},
                            "name": "prediction_id",
                            "in": "path",
                        }
                    ],
                    "responses": {
                        "200": {"description": "Successful Response", "content": _JSON_OK},
                        "422": _VALIDATION_ERROR,
                    },
                }
            },
        },
        "components": {"schemas": {"Input": input_schema, "Output": info.output.json_type(), **_ENVELOPE}},
    }


def write_schema(path: Path = SCHEMA_PATH, **kwargs: str) -> Path:
    """Write build_schema() to `path` (relative to the working directory) and return it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(build_schema(**kwargs), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def is_schema_current(path: Path = SCHEMA_PATH) -> bool:
    """True when the file on disk is what predict.py's signature produces now."""
    try:
        return json.loads(path.read_text(encoding="utf-8")) == build_schema()
    except (OSError, json.JSONDecodeError):
        return False


def _input_property(field) -> dict[str, Any]:
    prop: dict[str, Any] = dict(field.type.json_type())
    integer = prop.get("type") == "integer"
    if field.default is not None:
        prop["default"] = field.default
    elif _is_optional(field):
        prop["default"] = None
    if field.description:
        prop["description"] = field.description
    for key, bound in (("minimum", field.ge), ("maximum", field.le)):
        if bound is not None:
            prop[key] = int(bound) if integer else bound
    for key, value in (("minLength", field.min_length), ("maxLength", field.max_length), ("pattern", field.regex)):
        if value is not None:
            prop[key] = value
    if _is_optional(field):
        prop["nullable"] = True
    prop["title"] = field.name.replace("_", " ").title()
    prop["x-order"] = field.order
    return dict(sorted(prop.items()))


def _is_optional(field) -> bool:
    return field.type.repetition.name.startswith("OPTIONAL")


def _is_streaming(module_name: str, class_name: str) -> bool:
    """@cog.streaming leaves no trace at run time; like `cog build`, read it from the source."""
    module = __import__(module_name)
    tree = ast.parse(inspect.getsource(module))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "run":
                    return any(
                        ast.unparse(d).split("(")[0] in ("streaming", "cog.streaming") for d in item.decorator_list
                    )
    return False


def _simple_get(summary: str, operation_id: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "operationId": operation_id,
        "responses": {"200": {"description": "Successful Response", "content": _JSON_OK}},
    }


def _titled(title: str, properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"title": title, "type": "object", "properties": properties, **extra}


def _string(title: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "type": "string", **extra}


# The prediction envelope is the same for every Cog model.
_ENVELOPE: dict[str, Any] = {
    "PredictionRequest": _titled(
        "PredictionRequest", {"id": _string("Id"), "input": {"$ref": "#/components/schemas/Input"}}
    ),
    "PredictionResponse": _titled(
        "PredictionResponse",
        {
            "input": {"$ref": "#/components/schemas/Input"},
            "output": {"$ref": "#/components/schemas/Output"},
            "id": _string("Id"),
            "version": _string("Version"),
            "created_at": _string("Created At", format="date-time"),
            "started_at": _string("Started At", format="date-time"),
            "completed_at": _string("Completed At", format="date-time"),
            "status": _string("Status"),
            "error": _string("Error"),
            "logs": _string("Logs"),
            "metrics": {"title": "Metrics", "type": "object"},
        },
    ),
    "Status": {
        "title": "Status",
        "description": "An enumeration.",
        "enum": ["starting", "processing", "succeeded", "canceled", "failed"],
        "type": "string",
    },
    "HTTPValidationError": _titled(
        "HTTPValidationError",
        {"detail": {"title": "Detail", "type": "array", "items": {"$ref": "#/components/schemas/ValidationError"}}},
    ),
    "ValidationError": _titled(
        "ValidationError",
        {
            "loc": {
                "title": "Location",
                "type": "array",
                "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
            },
            "msg": {"title": "Message", "type": "string"},
            "type": {"title": "Error Type", "type": "string"},
        },
        required=["loc", "msg", "type"],
    ),
}
