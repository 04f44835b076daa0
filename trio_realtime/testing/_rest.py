"""The local server's REST broadcast endpoints, over TCP and in memory.

Theory of operation
-------------------
:class:`RestEndpoints` decides a request as the real server's plug pipeline and controllers do,
synchronously and without I/O: it takes a :class:`RestRequest` and returns a
:class:`RestResponse`, fanning accepted messages out through the shared rooms of the ``Hub``.
Two ways lead to it:

* over TCP, the server's stream handler looks at the request line: anything but ``GET`` (an
  upgrade) goes to :func:`serve_http`, an HTTP/1.1 loop on h11 with keep-alive, as httpx and
  node's ``fetch`` pool connections;
* in memory, :class:`MemoryHTTPTransport` is an ``httpx`` transport that hands each request to
  the same endpoints, for clients under trio's ``MockClock``.

Routes, with or without the hosted ``/realtime/v1`` prefix: ``POST /api/broadcast`` (batch) and
``POST /api/broadcast/:topic/events/:event`` (single). The order of checks is the server's: the
body parser first (413 over :data:`MAX_BODY`, 400 for malformed JSON), then the single
endpoint's content type (415), the rate limiter (429, and its ``x-rate-*`` headers on every
answer after it), the token (401), then the controller (422 for invalid messages, 403 for a
private topic the token may not write to, 202).

The module is longer than the project's usual 500 lines because the server's order of checks is
kept in one place, from the body parser to the controller, for both endpoints.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import parse_qsl, unquote, urlsplit

import h11
import httpx
import orjson
import trio

from .._frames import BROADCAST, JSONObject, JSONValue, realtime_topic
from ._state import ChannelAuthorization as ChannelAuthorization
from ._state import Hub

logger = logging.getLogger("trio_realtime.testing")

MAX_BODY: Final = 8_000_000
"""Largest request body (bytes) accepted, Plug.Parsers' default ``length``; larger gets 413."""

MAX_DISCARD: Final = 8 * MAX_BODY
"""Bytes of an oversized body read and dropped before the 413 answer; past that, the connection
is closed without reading on."""

KEEPALIVE_TIMEOUT: Final = 60.0
"""Seconds an idle keep-alive HTTP connection stays open."""

MAX_PAYLOAD_BYTES: Final = 3_000 * 1000 + 500
"""The tenant payload limit (``max_payload_size_in_kb`` 3000, plus the server's 500 bytes),
measured here on the payload's JSON encoding."""

DEFAULT_EVENTS_PER_SECOND: Final = 100
"""The tenant's ``max_events_per_second`` default."""

_NOT_FOUND: Final = orjson.dumps({"errors": {"detail": "Not Found"}})
_UNSUPPORTED_TYPE: Final = orjson.dumps(
    {"error": "Unsupported Media Type. Use application/json or application/octet-stream"}
)
_PREFIX: Final = "/realtime/v1"


@dataclass(frozen=True, slots=True)
class RestRequest:
    """An HTTP request as the endpoints see it.

    Attributes:
        method: ``POST``, ``GET``...
        target: The request target (path and query), still percent-encoded.
        headers: Lower-cased names to values (the first value of a repeated header).
        body: The whole body.
    """

    method: str
    target: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class RestResponse:
    """An HTTP response: status, headers (``content-type`` set for a body) and body."""

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


def _json(
    status: int, value: JSONValue, headers: list[tuple[str, str]] | None = None
) -> RestResponse:
    return RestResponse(
        status,
        [*(headers or []), ("content-type", "application/json; charset=utf-8")],
        orjson.dumps(value),
    )


def _message(status: int, text: str, headers: list[tuple[str, str]]) -> RestResponse:
    return _json(status, {"message": text}, headers)


class _RateWindow:
    """Events accepted in the last second, for the rate limiter (bounded by the limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._events: deque[tuple[float, int]] = deque()
        self._count = 0

    def rate(self, now: float) -> int:
        events = self._events
        while events and events[0][0] <= now - 1.0:
            self._count -= events.popleft()[1]
        return self._count

    def add(self, now: float, count: int) -> None:
        if count:
            self._events.append((now, count))
            self._count += count


def _bearer(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _content_kind(content_type: str | None) -> str | None:
    """``"json"``, ``"octet-stream"``, ``"none"`` (no header), or ``None`` (unsupported)."""
    if content_type is None:
        return "none"
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/json":
        return "json"
    if media == "application/octet-stream":
        return "octet-stream"
    return None


def _payload_too_large(payload: JSONValue | bytes) -> bool:
    size = len(payload) if isinstance(payload, bytes) else len(orjson.dumps(payload))
    return size > MAX_PAYLOAD_BYTES


class RestEndpoints:
    """The REST endpoints of one server; :meth:`handle` decides a request.

    Args:
        hub: The server's shared state (its rooms, configuration and private authorization).
        max_events_per_second: The rate limit; REST messages count against it.
    """

    def __init__(self, hub: Hub, *, max_events_per_second: int = DEFAULT_EVENTS_PER_SECOND) -> None:
        self._hub = hub
        self._window = _RateWindow(max_events_per_second)
        self.requests = 0
        self.connections = 0

    # -- routing --------------------------------------------------------------------------------

    async def handle(self, request: RestRequest) -> RestResponse:
        """Decide ``request`` and do what it asks; never raises for bad input.

        A checkpoint only when a private message needs the database's policies. A failure of
        the server itself is logged and answered with 500, so that no serving task dies of it.
        """
        self.requests += 1
        try:
            return await self._handle(request)
        except Exception:
            logger.exception("REST %s %s: internal error", request.method, request.target)
            return _message(500, "Internal Server Error", [])

    async def _handle(self, request: RestRequest) -> RestResponse:
        parts = urlsplit(request.target)
        path = parts.path
        if path.startswith(_PREFIX + "/"):
            path = path[len(_PREFIX) :]
        segments = path.rstrip("/").split("/")
        single = len(segments) == 6 and segments[:3] == ["", "api", "broadcast"]
        single = single and segments[4] == "events" and bool(segments[3]) and bool(segments[5])
        batch = segments == ["", "api", "broadcast"]
        if request.method != "POST" or not (single or batch):
            return RestResponse(
                404, [("content-type", "application/json; charset=utf-8")], _NOT_FOUND
            )
        if len(request.body) > MAX_BODY:
            return _json(413, "Request Entity Too Large")
        content_type = request.headers.get("content-type")
        kind = _content_kind(content_type)
        parsed: JSONValue = None
        if kind in ("json", "none") and request.body:
            try:
                parsed = orjson.loads(request.body)
            except orjson.JSONDecodeError:
                if kind == "json":
                    return _json(400, "Bad Request")
        if single and kind is None:
            return RestResponse(415, [("content-type", "application/json")], _UNSUPPORTED_TYPE)
        now = trio.current_time()
        rate = self._window.rate(now)
        limit = self._window.limit
        headers = [
            ("x-rate-rolling", str(rate)),
            ("x-rate-limit", str(limit)),
            ("x-rate-limit-remaining", str(limit - rate)),
        ]
        if rate >= limit:
            return _message(429, "Too many requests", headers)
        token = _bearer(request.headers.get("authorization")) or request.headers.get("apikey")
        if not self._authenticated(token, request.headers.get("apikey")):
            return _message(401, "Unauthorized", headers)
        if single:
            query = dict(parse_qsl(parts.query, keep_blank_values=True))
            private = query.get("private") == "true"
            topic, event = unquote(segments[3]), unquote(segments[5])
            if kind == "octet-stream":
                body: JSONObject | bytes = request.body
            elif not request.body:
                body = {}
            elif isinstance(parsed, dict):
                body = parsed
            else:
                # Plug.Parsers puts a non-object JSON body under "_json": the payload is that map.
                body = {"_json": parsed}
            return await self._single(
                topic=topic,
                event=event,
                payload=body,
                private=private,
                token=token,
                headers=headers,
                now=now,
            )
        return await self._batch(parsed, token, headers, now)

    def _authenticated(self, token: str | None, apikey_header: str | None) -> bool:
        if not token:
            return False
        config = self._hub.config
        if config.apikey is not None and token == config.apikey:
            return True
        if config.token_check is not None:
            return config.token_check(token) is None
        # Without a token checker the server cannot verify a user's JWT: it takes one that
        # comes with the project's key, as a gateway in front of Realtime would.
        return config.apikey is None or apikey_header == config.apikey

    async def _may_write(self, topic: str, token: str | None) -> bool | None:
        """Whether ``token`` may broadcast to the private ``topic``; ``None`` when the
        database's policy check failed."""
        authorize = self._hub.config.authorize
        if authorize is not None and not authorize(topic, token, "write"):
            return False
        database = self._hub.database
        if database is None:
            return True
        policies = await database.authorize(token, topic)
        return None if policies is None else policies.broadcast_write

    # -- controllers ----------------------------------------------------------------------------

    async def _single(
        self,
        *,
        topic: str,
        event: str,
        payload: JSONObject | bytes,
        private: bool,
        token: str | None,
        headers: list[tuple[str, str]],
        now: float,
    ) -> RestResponse:
        if _payload_too_large(payload):
            return _json(
                422, {"errors": {"payload": ["Payload size exceeds tenant limit"]}}, headers
            )
        if private:
            allowed = await self._may_write(topic, token)
            if allowed is None:
                return _message(422, "RLS policy error", headers)
            if not allowed:
                return _message(403, "Unauthorized", headers)
        self._window.add(now, 1)
        room = self._hub.room(realtime_topic(topic), private)
        if room is not None:
            message: JSONObject = {"type": BROADCAST, "event": event, "payload": payload}  # type: ignore[dict-item]
            room.fan_out_user_broadcast(message)
        return RestResponse(202, headers)

    async def _batch(
        self, body: JSONValue, token: str | None, headers: list[tuple[str, str]], now: float
    ) -> RestResponse:
        raw = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(raw, list) or not raw:
            return _json(422, {"errors": {"messages": ["can't be blank"]}}, headers)
        errors: list[JSONValue] = []
        valid: list[JSONObject] = []
        for item in raw:
            message_errors, message = _check_message(item)
            errors.append(message_errors)
            if message is not None:
                valid.append(message)
        if any(errors):
            return _json(422, {"errors": {"messages": errors}}, headers)
        rate = self._window.rate(now)
        limit = self._window.limit
        if rate > limit:
            return _message(429, "You have exceeded your rate limit", headers)
        if len(valid) + rate > limit:
            return _message(
                429, "Too many messages to broadcast, please reduce the batch size", headers
            )
        allowed: dict[str, bool | None] = {}
        for message in valid:
            topic = message["topic"]
            assert isinstance(topic, str)
            private = message["private"] is True
            if private:
                if topic not in allowed:
                    allowed[topic] = await self._may_write(topic, token)
                if not allowed[topic]:
                    continue  # skipped without a word, as on the server
            self._window.add(now, 1)
            payload: JSONObject = {
                "event": message["event"],
                "payload": message["payload"],
                "type": BROADCAST,
            }
            if message.get("id") is not None:
                payload["meta"] = {"id": message["id"]}
            room = self._hub.room(realtime_topic(topic), private)
            if room is not None:
                room.fan_out(BROADCAST, payload)
        return RestResponse(202, headers)


def _check_message(item: JSONValue) -> tuple[JSONObject, JSONObject | None]:
    """Validate one batch message as the server's changeset does; return errors and message."""
    if not isinstance(item, dict):
        return {"message": ["is invalid"]}, None
    errors: dict[str, list[JSONValue]] = {}
    for name in ("topic", "event"):
        value = item.get(name)
        if value is None or value == "":
            errors.setdefault(name, []).append("can't be blank")
        elif not isinstance(value, str):
            errors.setdefault(name, []).append("is invalid")
    payload = item.get("payload")
    if payload is None:
        errors.setdefault("payload", []).append("can't be blank")
    elif not isinstance(payload, dict):
        errors.setdefault("payload", []).append("is invalid")
    elif _payload_too_large(payload):
        errors.setdefault("payload", []).append("Payload size exceeds tenant limit")
    private = item.get("private", False)
    if private is None:
        private = False
    if private not in (True, False, "true", "false"):
        errors.setdefault("private", []).append("is invalid")
    message_id = item.get("id")
    if message_id is not None and not isinstance(message_id, str):
        errors.setdefault("id", []).append("is invalid")
    if errors:
        return dict(errors), None
    message: JSONObject = {
        "topic": item["topic"],
        "event": item["event"],
        "payload": payload,
        "private": private in (True, "true"),
        "id": message_id,
    }
    return {}, message


# -- HTTP/1.1 over a stream ------------------------------------------------------------------------


def is_rest_request(head: bytes) -> bool:
    """Whether the first bytes of a connection start a request other than a ``GET`` upgrade."""
    return not head.startswith(b"GET ")


class _Prefixed(trio.abc.Stream):
    """A stream whose first reads return bytes already read from it."""

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self.stream = stream
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            size = len(self._prefix) if max_bytes is None else max_bytes
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self.stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self.stream.aclose()


class _PrefixedHalfCloseable(_Prefixed, trio.abc.HalfCloseableStream):
    async def send_eof(self) -> None:
        stream = self.stream
        assert isinstance(stream, trio.abc.HalfCloseableStream)
        await stream.send_eof()


def prefixed(stream: trio.abc.Stream, prefix: bytes) -> trio.abc.Stream:
    """``stream`` with ``prefix`` put back in front of what it receives."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        return _PrefixedHalfCloseable(stream, prefix)
    return _Prefixed(stream, prefix)


_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)


async def _next_event(connection: h11.Connection, stream: trio.abc.Stream) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        connection.receive_data(bytes(await stream.receive_some(65536)))


async def _send(
    connection: h11.Connection, stream: trio.abc.Stream, response: RestResponse
) -> None:
    headers = [*response.headers, ("content-length", str(len(response.body)))]
    headers.append(("access-control-allow-origin", "*"))
    data = connection.send(h11.Response(status_code=response.status, headers=headers))
    assert data is not None
    if response.body:
        chunk = connection.send(h11.Data(data=response.body))
        assert chunk is not None
        data += chunk
    end = connection.send(h11.EndOfMessage())
    assert end is not None
    await stream.send_all(data + end)


async def serve_http(stream: trio.abc.Stream, head: bytes, endpoints: RestEndpoints) -> None:
    """Serve HTTP/1.1 requests on ``stream``, whose first bytes ``head`` were read already.

    Keeps the connection while the client keeps it alive, and closes it after
    :data:`KEEPALIVE_TIMEOUT` idle seconds, a body over :data:`MAX_BODY`, or a protocol error.
    """
    endpoints.connections += 1
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=64 * 1024)
    connection.receive_data(head)
    try:
        while True:
            event: object = None
            with trio.move_on_after(KEEPALIVE_TIMEOUT):
                event = await _next_event(connection, stream)
            if not isinstance(event, h11.Request):
                return  # idle timeout, or the client closed
            headers: dict[str, str] = {}
            for name, value in event.headers:
                headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
            body = bytearray()
            too_large = False
            length = headers.get("content-length", "")
            if length.isdigit() and int(length) > MAX_BODY:
                too_large = True
            while not too_large:
                part = await _next_event(connection, stream)
                if isinstance(part, h11.Data):
                    body += part.data
                    too_large = len(body) > MAX_BODY
                elif isinstance(part, h11.EndOfMessage):
                    break
                else:
                    return
            if too_large:
                # Read the rest (discarded, within a bound), so that a client still writing the
                # body sees the answer rather than a reset.
                discarded = len(body)
                body.clear()
                while discarded <= MAX_DISCARD:
                    part = await _next_event(connection, stream)
                    if not isinstance(part, h11.Data):
                        break
                    discarded += len(part.data)
                endpoints.requests += 1
                await _send(connection, stream, _json(413, "Request Entity Too Large"))
                return
            request = RestRequest(
                event.method.decode("ascii", "replace").upper(),
                event.target.decode("latin-1"),
                headers,
                bytes(body),
            )
            response = await endpoints.handle(request)
            logger.info(
                "HTTP %s %s -> %d", request.method, urlsplit(request.target).path, response.status
            )
            await _send(connection, stream, response)
            if connection.our_state is not h11.DONE or connection.their_state is not h11.DONE:
                return
            connection.start_next_cycle()
    except h11.RemoteProtocolError:
        if connection.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            with trio.move_on_after(1.0):
                try:
                    await _send(connection, stream, _json(400, "Bad Request"))
                except (*_STREAM_ERRORS, h11.LocalProtocolError):
                    pass
    except _STREAM_ERRORS:
        pass
    finally:
        await trio.aclose_forcefully(stream)


# -- in memory ------------------------------------------------------------------------------------


class MemoryHTTPTransport(httpx.AsyncBaseTransport):
    """An httpx transport that serves requests with the local server's endpoints, in memory.

    Pass it as ``open_realtime(..., http_transport=server.http_transport)`` (or to any
    ``httpx.AsyncClient``) to send REST broadcasts without a socket, under trio's MockClock.
    """

    def __init__(self, endpoints: RestEndpoints) -> None:
        self._endpoints = endpoints

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Decide ``request``; a checkpoint."""
        body = await request.aread()
        headers: dict[str, str] = {}
        for name, value in request.headers.multi_items():
            headers.setdefault(name.lower(), value)
        target = request.url.raw_path.decode("ascii")
        method = request.method.upper()
        response = await self._endpoints.handle(RestRequest(method, target, headers, body))
        await trio.lowlevel.checkpoint()
        return httpx.Response(response.status, headers=response.headers, content=response.body)
