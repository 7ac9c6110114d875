"""Errors with TF Serving's status codes, so gRPC and REST report failures the same way.

Every failure a request can cause is a ``ServingError`` carrying a gRPC status code;
the transports map it to a gRPC status or to TF Serving's HTTP code table
(model_servers/http_server.cc), and nothing else escapes a handler.
"""
from __future__ import annotations

import grpc

OK = grpc.StatusCode.OK
INVALID_ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED
INTERNAL = grpc.StatusCode.INTERNAL
UNKNOWN = grpc.StatusCode.UNKNOWN
UNAVAILABLE = grpc.StatusCode.UNAVAILABLE

_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# TF Serving's ToHTTPStatusCode.
HTTP_STATUS = {
    "OK": 200, "CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404, "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
    "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500,
    "UNAVAILABLE": 503, "DATA_LOSS": 500, "UNAUTHENTICATED": 401,
}

MAX_MESSAGE_CHARS = 2000  # TF runtime errors carry whole graph traces; keep replies readable


class ServingError(Exception):
    """A request failure with the status code TF Serving would return."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message[:MAX_MESSAGE_CHARS]

    @property
    def code_name(self) -> str:
        return self.code.name

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code.name, 500)

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


def code_from_number(number: int) -> grpc.StatusCode:
    return _BY_NUMBER.get(int(number), UNKNOWN)


def as_serving_error(exc: BaseException) -> ServingError:
    """Maps any exception to a ServingError (TF op errors keep their own code)."""
    if isinstance(exc, ServingError):
        return exc
    error_code = getattr(exc, "error_code", None)  # tf.errors.OpError
    if isinstance(error_code, int):
        message = getattr(exc, "message", None) or str(exc)
        return ServingError(code_from_number(error_code), message)
    if isinstance(exc, (TypeError, ValueError)):
        return ServingError(INVALID_ARGUMENT, f"{type(exc).__name__}: {exc}")
    if isinstance(exc, MemoryError):
        return ServingError(RESOURCE_EXHAUSTED, "out of memory")
    return ServingError(INTERNAL, f"{type(exc).__name__}: {exc}")
