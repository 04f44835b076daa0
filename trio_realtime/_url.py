"""Endpoint URLs: normalisation, query parameters and redaction of secrets."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

_SECRET_PARAMS = frozenset({"apikey", "access_token", "token"})
REDACTED = "<redacted>"


@dataclass(frozen=True, slots=True, repr=False)
class Endpoint:
    """A normalised WebSocket endpoint.

    Attributes:
        url: The full ``ws://`` or ``wss://`` URL including the query (holds the apikey).
        secure: Whether TLS is used (``wss``).
        host: The host name or address.
        port: The TCP port.
        resource: The path plus query, as sent in the HTTP request line.
    """

    url: str
    secure: bool
    host: str
    port: int
    resource: str

    @property
    def redacted(self) -> str:
        """The URL with every secret query parameter replaced by ``<redacted>``."""
        return redact_url(self.url)

    @property
    def secrets(self) -> list[str]:
        """The values of the secret query parameters, for redaction."""
        query = urlsplit(self.url).query
        return [value for key, value in parse_qsl(query) if key in _SECRET_PARAMS and value]

    def __repr__(self) -> str:
        return f"Endpoint({self.redacted!r})"


def websocket_url(url: str, *, apikey: str, vsn: str, log_level: str | None = None) -> Endpoint:
    """Turn a project URL or socket URL into the Realtime WebSocket endpoint.

    * ``https://ref.supabase.co`` becomes ``wss://ref.supabase.co/realtime/v1/websocket``
      (``http`` becomes ``ws``);
    * a path ending in ``/socket`` or ``/realtime/v1`` gets ``/websocket`` appended;
    * a path already ending in ``/websocket`` is kept;
    * any other path gets ``/realtime/v1/websocket`` appended.

    The query keeps its parameters and gains ``apikey``, ``vsn`` and, when given, ``log_level``.

    Raises:
        ValueError: for an unsupported scheme or a URL without a host. The message never
            contains the apikey.
    """
    try:
        parts = urlsplit(url)
        port_value = parts.port
    except ValueError:
        raise ValueError(f"invalid URL {redact_url(url)!r}") from None
    scheme = parts.scheme.lower()
    if scheme in ("http", "ws"):
        ws_scheme, secure = "ws", False
    elif scheme in ("https", "wss"):
        ws_scheme, secure = "wss", True
    else:
        raise ValueError(
            f"URL {redact_url(url)!r} must start with http://, https://, ws:// or wss://"
        )
    host = parts.hostname
    if not host:
        raise ValueError(f"URL {redact_url(url)!r} has no host")
    path = parts.path.rstrip("/")
    if path.endswith("/websocket"):
        pass
    elif path.endswith(("/socket", "/realtime/v1")):
        path += "/websocket"
    else:
        path += "/realtime/v1/websocket"
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("apikey", "vsn", "log_level")]
    query.append(("apikey", apikey))
    query.append(("vsn", vsn))
    if log_level is not None:
        query.append(("log_level", log_level))
    query_text = urlencode(query)
    port = port_value if port_value is not None else (443 if secure else 80)
    full = urlunsplit((ws_scheme, parts.netloc, path, query_text, ""))
    return Endpoint(full, secure, host, port, f"{path}?{query_text}")


def redact_url(url: str) -> str:
    """Return ``url`` with the values of ``apikey``, ``access_token`` and ``token`` hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rpartition("@")[2]
    if not parts.query:
        return urlunsplit((parts.scheme, netloc, parts.path, "", parts.fragment))
    pairs = [
        (k, REDACTED if k.lower() in _SECRET_PARAMS else v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
    ]
    query = urlencode(pairs, safe="<>")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(text: str, *secrets: str | None) -> str:
    """Replace every occurrence of each non-empty secret in ``text`` with ``<redacted>``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text
