"""Errors of the REST broadcast endpoints, and the one place httpx's exceptions are mapped.

The REST errors join the library's tree under :class:`RealtimeError`::

    RealtimeError
    ├── PushTimeout             the request did not complete within the client timeout
    ├── RealtimeConnectionError the server could not be reached (refused, DNS, TLS...)
    └── RestError               the server answered with an error status; carries its words
        ├── RestUnauthorized    401 or 403: key, token, suspended project, private topic
        ├── RestPayloadTooLarge 413 (request body), or 422 "Payload size exceeds tenant limit"
        ├── RestRateLimited     429, with the server's x-rate-limit figures
        └── RestServerError     5xx

:func:`map_http_errors` wraps every request, so that no httpx exception reaches a caller, and
:func:`raise_for_response` turns an error status into one of the classes above. Messages are
redacted of the apikey and token before they are built.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Final

import httpx
import orjson

from ._exceptions import PushTimeout, RealtimeConnectionError, RealtimeError
from ._url import redact

PAYLOAD_SIZE_MESSAGE: Final = "Payload size exceeds tenant limit"
"""The 422 validation error the server gives a payload over the tenant's size limit."""


class RestError(RealtimeError):
    """A REST broadcast request was answered with an error status.

    Attributes:
        status_code: The HTTP status.
        server_message: The server's own words: the ``message`` or ``error`` of its JSON body,
            or the validation errors rendered as text; ``None`` for an empty body.
        body: The decoded JSON body (``None`` when empty or not JSON).
    """

    def __init__(
        self, message: str, *, status_code: int, server_message: str | None, body: object
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.server_message = server_message
        self.body = body


class RestUnauthorized(RestError):
    """401 or 403: a missing, invalid or expired key or token, a suspended project, or a
    private topic the token may not write to (``"Unauthorized"``)."""


class RestPayloadTooLarge(RestError):
    """The payload is too large: HTTP 413 for a request body over the server's parser limit,
    or 422 ``"Payload size exceeds tenant limit"`` (the project's payload size limit)."""


class RestRateLimited(RestError):
    """429: the project's rate limit (``"Too many requests"``, ``"You have exceeded your rate
    limit"``, ``"Too many messages to broadcast, please reduce the batch size"``).

    Attributes:
        limit: The ``x-rate-limit`` header: events per second allowed, if sent.
        remaining: ``x-rate-limit-remaining``, if sent.
        rolling: ``x-rate-rolling``, the rolling average the server measured, if sent.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        server_message: str | None,
        body: object,
        limit: int | None,
        remaining: int | None,
        rolling: int | None,
    ) -> None:
        super().__init__(message, status_code=status_code, server_message=server_message, body=body)
        self.limit = limit
        self.remaining = remaining
        self.rolling = rolling


class RestServerError(RestError):
    """5xx: the server failed (for example ``"Unable to authorize broadcast"``)."""


def _header_int(headers: Mapping[str, str], name: str) -> int | None:
    value = headers.get(name)
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _server_words(body: object) -> str | None:
    if isinstance(body, str):
        return body
    if not isinstance(body, dict):
        return None
    for key in ("message", "error"):
        value = body.get(key)
        if isinstance(value, str):
            return value
    errors = body.get("errors")
    if errors is not None:
        return orjson.dumps(errors).decode()
    return None


def _mentions(value: object, text: str) -> bool:
    if isinstance(value, str):
        return value == text
    if isinstance(value, dict):
        return any(_mentions(item, text) for item in value.values())
    if isinstance(value, list):
        return any(_mentions(item, text) for item in value)
    return False


def raise_for_response(
    status: int, headers: Mapping[str, str], content: bytes, what: str, *secrets: str | None
) -> None:
    """Raise the :class:`RestError` for an error status; return for 2xx.

    Args:
        status: The HTTP status.
        headers: The response headers (case-insensitive mapping).
        content: The response body.
        what: What was requested, for the message (for example ``"POST /api/broadcast"``).
        secrets: Values redacted from the message.
    """
    if 200 <= status < 300:
        return
    body: object = None
    if content:
        try:
            body = orjson.loads(content)
        except orjson.JSONDecodeError:
            body = None
    words = _server_words(body)
    text = redact(f"{what} failed with HTTP {status}" + (f": {words}" if words else ""), *secrets)
    safe_words = redact(words, *secrets) if words is not None else None
    if status in (401, 403):
        raise RestUnauthorized(text, status_code=status, server_message=safe_words, body=body)
    if status == 413 or (status == 422 and _mentions(body, PAYLOAD_SIZE_MESSAGE)):
        raise RestPayloadTooLarge(text, status_code=status, server_message=safe_words, body=body)
    if status == 429:
        raise RestRateLimited(
            text,
            status_code=status,
            server_message=safe_words,
            body=body,
            limit=_header_int(headers, "x-rate-limit"),
            remaining=_header_int(headers, "x-rate-limit-remaining"),
            rolling=_header_int(headers, "x-rate-rolling"),
        )
    if status >= 500:
        raise RestServerError(text, status_code=status, server_message=safe_words, body=body)
    raise RestError(text, status_code=status, server_message=safe_words, body=body)


@contextlib.contextmanager
def map_http_errors(what: str, timeout: float, *secrets: str | None) -> Iterator[None]:
    """Turn httpx's exceptions raised in the block into the library's.

    A timeout becomes :class:`PushTimeout`; every other transport failure (refused, DNS, TLS,
    a dropped connection, a protocol violation) becomes :class:`RealtimeConnectionError`. The
    httpx exception is not chained, so that nothing of it leaks through ``__cause__``.
    """
    try:
        yield
    except httpx.TimeoutException:
        raise PushTimeout(redact(f"{what} not completed within {timeout} s", *secrets)) from None
    except httpx.HTTPError as exc:
        detail = redact(str(exc) or type(exc).__name__, *secrets)
        raise RealtimeConnectionError(redact(f"{what} failed: {detail}", *secrets)) from None
    except httpx.InvalidURL as exc:
        raise RealtimeConnectionError(
            redact(f"{what} failed: invalid URL ({exc})", *secrets)
        ) from None
