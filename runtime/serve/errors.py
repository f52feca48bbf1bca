"""The API's error answer: JSON ``{"error": message, "retryable": bool}`` with a 4xx/5xx status."""

from __future__ import annotations

from fastapi.responses import JSONResponse


def error_response(status: int, message: str, retryable: bool = False,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An error answer; ``retryable`` tells clients whether the same request may succeed later."""
    return JSONResponse({"error": message, "retryable": retryable}, status_code=status, headers=headers)
