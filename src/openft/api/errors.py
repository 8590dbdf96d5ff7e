"""OpenAI's error envelope and the exception handlers that produce it.

The SDK retries 408/409/429/5xx, so a client mistake must be 400 (invalid) or 404 (unknown/foreign id).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers: dict[str, str] = {}  # extra response headers (retry-after on a 429)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def not_found(message: str, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(404, message, param=param, code=code)


def model_not_found(model: str) -> OpenAIError:
    return OpenAIError(
        404,
        f"The model `{model}` does not exist or you do not have access to it.",
        param="model",
        code="model_not_found",
    )


def _location_to_param(loc: tuple) -> str | None:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form")]
    if not parts:
        return None
    param = parts[0]
    for part in parts[1:]:
        param += f"[{part}]" if part.isdigit() else f".{part}"
    return param


def error_response(error: OpenAIError) -> JSONResponse:
    headers = {"x-should-retry": "false"} if error.status < 500 and error.status != 429 else {}
    return JSONResponse(error.body(), status_code=error.status, headers={**headers, **error.headers})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OpenAIError)
    async def _openai_error(_request: Request, exc: OpenAIError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        param = _location_to_param(tuple(first.get("loc", ())))
        detail = first.get("msg", "Invalid request")
        message = f"Invalid value for '{param}': {detail}" if param else f"Invalid request: {detail}"
        if first.get("type") == "missing" and param:
            message = f"Missing required parameter: '{param}'."
        if first.get("type") == "json_invalid":
            message = "We could not parse the JSON body of your request. Send valid JSON."
            param = None
        return error_response(OpenAIError(400, message, param=param))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
        elif exc.status_code == 405:
            message = f"Method {request.method} is not allowed on {request.url.path}"
            return error_response(OpenAIError(400, message))
        else:
            message = str(exc.detail)
        return error_response(OpenAIError(exc.status_code, message))

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(
            OpenAIError(500, "The server had an error processing your request.", type="server_error")
        )
