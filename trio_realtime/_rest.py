"""REST broadcast: sending to channels over HTTP, without a socket or a join.

Realtime has two endpoints beside the socket (PROTOCOL.md section 9), both under ``/api`` of the
same host (``/realtime/v1/api`` on hosted Supabase, where the socket is ``/realtime/v1/websocket``):

* ``POST /api/broadcast/<topic>/events/<event>`` sends one message, its payload the request body:
  a JSON object (``application/json``) or raw bytes (``application/octet-stream``). V2 sockets
  receive it as a binary user broadcast, V1 sockets as text (nothing for bytes).
* ``POST /api/broadcast`` sends a batch, ``{"messages": [{"topic", "event", "payload",
  "private", "id"}...]}``; subscribers see ``id`` as ``meta.id``.

Both answer 202 with an empty body. The topic is the sub-topic, without ``realtime:``. Private
messages need the token's broadcast write permission: the single endpoint refuses with 403, the
batch endpoint silently skips them.

:class:`RestSender` holds one pooled ``httpx.AsyncClient`` (created on first use, closed with the
``RealtimeClient``), which runs on trio. The apikey and the user's token travel in the
``apikey`` and ``Authorization: Bearer`` headers, never in the URL. Every httpx failure is mapped
at this boundary (``_http_errors``).
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import orjson

from ._checks import check_json, check_text, encode_json
from ._exceptions import RealtimeError
from ._frames import JSONObject, JSONValue, sub_topic
from ._http_errors import map_http_errors, raise_for_response
from ._url import Endpoint

logger = logging.getLogger("trio_realtime.rest")

MAX_BATCH: Final = 10_000
"""Messages one :meth:`RestSender.send_batch` call takes at most (a bound on the request built
in memory; the server's own limit is its events-per-second rate, which refuses larger batches
with 429)."""


@dataclass(frozen=True, slots=True)
class BroadcastMessage:
    """One message of :meth:`RealtimeClient.http_broadcast`.

    Attributes:
        topic: The channel's topic, with or without the ``realtime:`` prefix.
        event: The user event, for example ``"cursor"``.
        payload: A JSON object (the batch endpoint accepts only objects).
        private: Send to the private channel of the topic (needs broadcast write permission;
            the server silently skips a private message the token may not send).
        id: An identifier subscribers see as ``meta.id``.

    Raises:
        ValueError: for an empty topic or event, or text that cannot be sent (a lone
            surrogate) in the topic, the event, the id or the payload (HD-04).
        TypeError: for a payload that is not a mapping or holds a value JSON cannot hold, or
            an id that is not a string.
    """

    topic: str
    event: str
    payload: Mapping[str, JSONValue]
    private: bool = field(default=False, kw_only=True)
    id: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if not isinstance(self.topic, str) or not sub_topic(self.topic):
            raise ValueError("a broadcast message needs a non-empty topic")
        check_text(self.topic, "a broadcast message topic")
        if not isinstance(self.event, str) or not self.event:
            raise ValueError("a broadcast message needs a non-empty event")
        check_text(self.event, "a broadcast message event")
        if not isinstance(self.payload, Mapping):
            raise TypeError(
                "a batch broadcast payload must be a mapping (a JSON object), not "
                f"{type(self.payload).__name__}"
            )
        check_json(dict(self.payload), "a broadcast message payload")
        if self.id is not None and not isinstance(self.id, str):
            raise TypeError("a broadcast message id must be a string")
        if self.id is not None:
            check_text(self.id, "a broadcast message id", empty=True)

    def to_json(self) -> JSONObject:
        """The message as the batch endpoint takes it."""
        message: JSONObject = {
            "topic": sub_topic(self.topic),
            "event": self.event,
            "payload": dict(self.payload),
            "private": bool(self.private),
        }
        if self.id is not None:
            message["id"] = self.id
        return message


def broadcast_url(endpoint: Endpoint) -> str:
    """The batch endpoint for a socket endpoint, as realtime-js derives it.

    ``wss://ref.supabase.co/realtime/v1/websocket`` gives
    ``https://ref.supabase.co/realtime/v1/api/broadcast``; ``ws://host:4000/socket/websocket``
    gives ``http://host:4000/api/broadcast``. The query (which holds the apikey) is dropped.
    """
    parts = urlsplit(endpoint.url)
    scheme = "https" if endpoint.secure else "http"
    path = parts.path.rstrip("/")
    for suffix in ("/socket/websocket", "/websocket", "/socket"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
            break
    return urlunsplit((scheme, parts.netloc, f"{path}/api/broadcast", "", ""))


class RestSender:
    """Sends REST broadcasts for one client; created by :class:`RealtimeClient`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        apikey: str,
        token: Callable[[], Awaitable[str | None]],
        ssl_context: ssl.SSLContext | None,
        timeout: float,
        connect_timeout: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = broadcast_url(endpoint)
        self._apikey = apikey
        self._token = token
        self._ssl_context = ssl_context
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"<RestSender {self._url}>"

    @property
    def url(self) -> str:
        """The batch endpoint's URL (it holds no secret)."""
        return self._url

    def _http(self) -> httpx.AsyncClient:
        if self._closed:
            raise RealtimeError("the client is closed")
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self._ssl_context if self._ssl_context is not None else True,
                timeout=httpx.Timeout(self._timeout, connect=self._connect_timeout),
                transport=self._transport,
                follow_redirects=False,
                trust_env=False,
            )
        return self._client

    async def _post(self, url: str, params: dict[str, str], body: bytes, content_type: str) -> None:
        what = f"POST {urlsplit(url).path}"
        http = self._http()
        headers = {"apikey": self._apikey, "Content-Type": content_type}
        token = await self._token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        secrets = (self._apikey, token)
        with map_http_errors(what, self._timeout, *secrets):
            response = await http.post(url, params=params, content=body, headers=headers)
            content = response.content
        logger.debug("%s: HTTP %d", what, response.status_code)
        raise_for_response(response.status_code, response.headers, content, what, *secrets)

    async def send_single(
        self,
        topic: str,
        event: str,
        payload: Mapping[str, JSONValue] | bytes | bytearray | memoryview,
        *,
        private: bool,
    ) -> None:
        """``POST /api/broadcast/<topic>/events/<event>``; see :meth:`Channel.http_send`."""
        if not isinstance(event, str) or not event:
            raise ValueError("event must be a non-empty string")
        check_text(event, "event")
        if isinstance(payload, bytes | bytearray | memoryview):
            body, content_type = bytes(payload), "application/octet-stream"
        elif isinstance(payload, Mapping):
            body, content_type = encode_json(dict(payload), "payload"), "application/json"
        else:
            raise TypeError(
                "http_send takes a mapping (a JSON object) or bytes, not "
                f"{type(payload).__name__}: the endpoint's body is the payload"
            )
        name = sub_topic(topic)
        url = f"{self._url}/{quote(name, safe='')}/events/{quote(event, safe='')}"
        params = {"private": "true"} if private else {}
        await self._post(url, params, body, content_type)

    async def send_batch(self, messages: Iterable[BroadcastMessage]) -> int:
        """``POST /api/broadcast``; see :meth:`RealtimeClient.http_broadcast`."""
        batch: list[JSONValue] = []
        for message in messages:
            if not isinstance(message, BroadcastMessage):
                raise TypeError(
                    f"http_broadcast takes BroadcastMessage objects, not {type(message).__name__}"
                )
            if len(batch) == MAX_BATCH:
                raise ValueError(f"at most {MAX_BATCH} messages go in one http_broadcast call")
            batch.append(message.to_json())
        if not batch:
            raise ValueError("http_broadcast needs at least one message")
        await self._post(self._url, {}, orjson.dumps({"messages": batch}), "application/json")
        return len(batch)

    async def aclose(self) -> None:
        """Close the connection pool; later sends raise :class:`RealtimeError`."""
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()
