"""The WebSocket upgrade decision, as the real server makes it: path, then vsn, then the keys.

:func:`check_upgrade` reads an upgrade request's target and ``x-api-key`` header and returns an
:class:`Upgrade` (the serializer and the token the connection runs with) or a :class:`Refusal`
(the HTTP status and body). The TCP and in-memory paths of the
server (``_gate``) both use it.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

import orjson

from .._serializer import VSN_1, VSN_2
from ._jwt import TokenError, verify_token

WEBSOCKET_PATHS = frozenset({"/socket/websocket", "/realtime/v1/websocket"})
_SEMVER = re.compile(r"(\d+)\.(\d+)\.(\d+)(?:\+[0-9A-Za-z.-]+)?")
_NOT_FOUND = orjson.dumps({"errors": {"detail": "Not Found"}})


@dataclass(frozen=True, slots=True)
class Upgrade:
    """An accepted upgrade: the connection's serializer and the token it connected with."""

    vsn: str
    token: str | None


@dataclass(frozen=True, slots=True)
class Refusal:
    """A refused upgrade: the HTTP status, the body, and whether the answer waits
    (``connect_error_delay``, as the real server waits before a 401)."""

    status: int
    body: bytes
    delayed: bool


def _negotiate_vsn(value: str | None) -> str | None:
    """Return the serializer for ``vsn`` as Phoenix picks it (``~> 1.0.0``/``~> 2.0.0``)."""
    if value is None:
        return VSN_1
    match = _SEMVER.fullmatch(value)
    if match is None:
        return None
    version = (match.group(1), match.group(2))
    if version == ("1", "0"):
        return VSN_1
    if version == ("2", "0"):
        return VSN_2
    return None


def _unauthorized(message: str) -> Refusal:
    return Refusal(401, orjson.dumps({"error": message}), delayed=True)


def check_upgrade(
    resource: str,
    header_apikey: str | None,
    required_apikey: str | None,
    jwt_secret: str | None = None,
) -> Upgrade | Refusal:
    """Decide an upgrade request as the real server does, in its order and with its
    statuses and error texts.

    Args:
        resource: The request target, path plus query.
        header_apikey: The ``x-api-key`` header, which wins over the ``apikey`` parameter.
        required_apikey: The key the server requires, or ``None`` to accept any.
        jwt_secret: When set, the key must be a JWT signed with it, with ``role`` and ``exp``.
    """
    parts = urlsplit(resource)
    if parts.path.rstrip("/") not in WEBSOCKET_PATHS:
        return Refusal(404, _NOT_FOUND, delayed=False)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    vsn = _negotiate_vsn(query.get("vsn"))
    if vsn is None:
        return Refusal(403, b"", delayed=False)
    token = header_apikey if header_apikey is not None else query.get("apikey")
    if required_apikey is not None:
        if not token:
            return _unauthorized("API key is missing")
        if not secrets.compare_digest(token.encode(), required_apikey.encode()):
            if token.count(".") != 2:
                return _unauthorized("The token provided is not a valid JWT")
            return _unauthorized("Failed to validate JWT signature")
    if jwt_secret is not None:
        if not token:
            return _unauthorized("API key is missing")
        try:
            verify_token(token, jwt_secret)
        except TokenError as exc:
            return _unauthorized(exc.connect_message)
    return Upgrade(vsn, token or None)
