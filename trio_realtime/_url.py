"""Endpoint URLs: normalisation, query parameters and redaction of secrets."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from ._serializer import Vsn

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
    redacted: str = field(default="", compare=False)
    """The URL with every secret query parameter replaced by ``<redacted>`` (computed once:
    every log line about the connection names it). Given by :func:`websocket_url`, which
    has the query's parts at hand; else computed from ``url``."""

    def __post_init__(self) -> None:
        if not self.redacted:
            object.__setattr__(self, "redacted", redact_url(self.url))

    @property
    def secrets(self) -> list[str]:
        """The values of the secret query parameters, for redaction."""
        query = urlsplit(self.url).query
        return [value for key, value in parse_qsl(query) if key in _SECRET_PARAMS and value]

    def __repr__(self) -> str:
        return f"Endpoint({self.redacted!r})"


class _DefaultVsn(str):
    """The type of :data:`DEFAULT_VSN`."""

    __slots__ = ()


DEFAULT_VSN: Final[Vsn] = cast("Vsn", _DefaultVsn("1.0.0"))
"""``open_realtime``'s default ``vsn``: equal to ``"1.0.0"``, yet not the same object as an
explicit ``"1.0.0"``, so that only an explicit value can contradict the URL's ``vsn``. It
behaves as ``vsn=None`` does: the URL's ``vsn``, else ``"1.0.0"``."""


@dataclass(frozen=True, slots=True)
class UrlOptions:
    """The connection options a URL's query may carry, merged with the keywords.

    Attributes:
        apikey: The API key, or ``None`` when neither the URL nor the keyword has one.
        vsn: The serializer version, or ``None`` when neither gives one.
        log_level: The server-side log level, or ``None``.
    """

    apikey: str | None = field(repr=False)
    vsn: str | None
    log_level: str | None


_URL_OPTIONS = ("apikey", "vsn", "log_level")


def url_options(
    url: str, *, apikey: str | None, vsn: str | None, log_level: str | None
) -> UrlOptions:
    """Merge the ``apikey``, ``vsn`` and ``log_level`` query parameters of ``url`` with the
    keywords of the same names: a keyword left ``None`` takes the URL's value.

    A URL that cannot be parsed is left to :func:`websocket_url` to report.

    Raises:
        ValueError: when a keyword contradicts the URL, or the URL gives one of them twice
            with different values. The message never contains the apikey.
    """
    try:
        query = urlsplit(url).query
    except ValueError:
        return UrlOptions(apikey, vsn, log_level)
    found: dict[str, str] = {}
    for key, value in parse_qsl(query):
        if key not in _URL_OPTIONS or not value:
            continue
        if found.setdefault(key, value) != value:
            raise ValueError(f"the URL gives {key} twice, with different values")
    given = {"apikey": apikey, "vsn": vsn, "log_level": log_level}
    merged: dict[str, str | None] = {}
    for key in _URL_OPTIONS:
        keyword, in_url = given[key], found.get(key)
        if keyword is not None and in_url is not None and keyword != in_url:
            if key == "apikey":
                raise ValueError(
                    "the apikey given differs from the apikey in the URL; give only one"
                )
            raise ValueError(f"{key}={keyword!r} contradicts {key}={in_url!r} in the URL")
        merged[key] = keyword if keyword is not None else in_url
    return UrlOptions(merged["apikey"], merged["vsn"], merged["log_level"])


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
    # What redact_url(full) gives, from the parts at hand (the parse again was most of the
    # cost of this function, paid by every client).
    redacted = urlunsplit(
        (ws_scheme, _redacted_netloc(parts.netloc), path, _redacted_query(query), "")
    )
    return Endpoint(full, secure, host, port, f"{path}?{query_text}", redacted)


def redact_url(url: str) -> str:
    """Return ``url`` with the values of ``apikey``, ``access_token`` and ``token`` hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = _redacted_netloc(parts.netloc)
    if not parts.query:
        return urlunsplit((parts.scheme, netloc, parts.path, "", parts.fragment))
    query = _redacted_query(parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def _redacted_netloc(netloc: str) -> str:
    if "@" in netloc:
        return REDACTED + "@" + netloc.rpartition("@")[2]
    return netloc


def _redacted_query(pairs: list[tuple[str, str]]) -> str:
    return urlencode(
        [(k, REDACTED if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="<>"
    )


# Characters a key, a JWT or a URL-encoded value is made of: a secret is only a whole value when
# neither neighbour is one of them (a trailing full stop ends a sentence, not the value).
_VALUE_CHARS = r"A-Za-z0-9_~+/=%-"
_URL = re.compile(r"\b(?:wss?|https?)://(?:<redacted>|[^\s'\"<>])+", re.IGNORECASE)
_SECRET_FIELD = re.compile(
    # name=value (a query or form field), "name": "value" (JSON) or a header line.
    r"(?P<name>\b(?:(?:apikey|api_key|access_token|user_token|token)="
    r"|(?:apikey|api_key|access_token|user_token|token)[\"']\s*:\s*[\"']"
    r"|(?:x-api-key|authorization)\s*:\s*(?:bearer\s+)?))"
    r"(?P<value>[A-Za-z0-9_~+/=%.-]+)",
    re.IGNORECASE,
)
MIN_BARE_SECRET = 8
"""Secrets shorter than this are redacted only where they stand as a value, never as a bare word."""


def redact(text: str, *secrets: str | None) -> str:
    """Hide secrets in ``text`` where they appear as values, and nowhere else.

    * in every URL, the ``apikey``, ``access_token`` and ``token`` query values and the user
      info (as :func:`redact_url`);
    * the value of ``apikey=``, ``access_token=``, ``user_token=`` and ``token=`` (also as
      JSON fields), and of the ``x-api-key`` and ``authorization`` headers, whatever it is;
    * each secret of :data:`MIN_BARE_SECRET` characters or more where it stands as a whole
      value (not inside a longer word, address or number).

    A short secret (``--apikey 1``) is thus not replaced inside ``127.0.0.1`` or ``HTTP 401``.
    """
    text = _URL.sub(lambda match: redact_url(match.group(0)), text)
    text = _SECRET_FIELD.sub(lambda match: match.group("name") + REDACTED, text)
    for secret in secrets:
        if secret and len(secret) >= MIN_BARE_SECRET:
            pattern = (
                rf"(?<![{_VALUE_CHARS}.]){re.escape(secret)}(?![{_VALUE_CHARS}]|\.[{_VALUE_CHARS}])"
            )
            text = re.sub(pattern, REDACTED, text)
    return text
