"""The API's error answer: JSON ``{"error": message, "retryable": bool}`` with a 4xx/5xx status.

The OpenAI-compatible routes answer the same refusals in OpenAI's shape (:func:`openai_error`):
``{"error": {"message", "type", "param", "code"}, "retryable"}``, since OpenAI clients show only
``error.message`` (with a plain string they would say just "Error code: 400").
"""

from __future__ import annotations

import json

from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

OPENAI_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
                      429: "rate_limit_error", 503: "service_unavailable_error"}
KEPT_HEADERS = ("retry-after", "connection")


def error_response(status: int, message: str, retryable: bool = False,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer; ``retryable`` tells clients whether the same request may succeed later."""
    return JSONResponse({"error": message, "retryable": retryable}, status_code=status, headers=headers)


def invalid_request(exc: ValidationError) -> JSONResponse:
    """A 400 naming the first field a request body got wrong (from pydantic's validation)."""
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return error_response(400, f"invalid request: {where}: {first['msg']}")


def openai_error(response: Response) -> Response:
    """``response`` unchanged unless it is an :func:`error_response`: then the same error in OpenAI's shape."""
    if response.status_code < 400 or not isinstance(response, JSONResponse):
        return response
    body = json.loads(bytes(response.body))
    if not isinstance(body.get("error"), str):
        return response
    error = {"message": body["error"], "type": OPENAI_ERROR_TYPES.get(response.status_code, "api_error"),
             "param": None, "code": response.status_code}
    headers = {k: v for k, v in response.headers.items() if k in KEPT_HEADERS}
    return JSONResponse({"error": error, "retryable": body.get("retryable", False)},
                        status_code=response.status_code, headers=headers)
