"""Every answer other than 200 is ``{"error": "..."}`` with a 4xx/5xx status: the exception the handlers raise,
the response it becomes, and how the OpenAPI document describes them."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ApiError(Exception):
    """An answer other than 200: its status, message and extra headers."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


class ErrorBody(BaseModel):
    """The body of every answer other than 200."""

    error: str


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """``{"error": message}`` with ``status``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


_MEANINGS = {
    400: "A malformed request: the message names the field or the limit",
    404: "Unknown route, model or version",
    405: "Method not allowed (the Allow header lists the allowed ones)",
    408: "The request's headers or body did not arrive in time; the connection is closed",
    413: "The body, or the number of pictures, is over the server's limit",
    415: "Unsupported Content-Type",
    422: "The model's output for this input is not finite",
    429: "The queue is full; retry after Retry-After seconds",
    499: "The client went away before the answer",
    500: "Inference failed on the backend",
    503: "Not ready yet, or shutting down",
    504: "No result within the request's deadline",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route answering ``statuses`` with an ErrorBody."""
    return {status: {"model": ErrorBody, "description": _MEANINGS[status]} for status in statuses}
