"""Endpoint URLs: the accepted URL forms (CL-02), redaction of secrets (SE-01, RS-12) and the
URL's own query options (RS-08)."""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlsplit

import pytest
import trio
import trio.testing
from conftest import APIKEY

from trio_realtime import open_realtime
from trio_realtime._url import Endpoint, redact, redact_url, url_options, websocket_url
from trio_realtime.testing import serve_realtime

KEY = "anon-key-SECRET"


def query(endpoint: Endpoint) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(endpoint.url).query)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://ref.supabase.co", "wss://ref.supabase.co/realtime/v1/websocket"),
        ("https://ref.supabase.co/", "wss://ref.supabase.co/realtime/v1/websocket"),
        ("HTTPS://ref.supabase.co", "wss://ref.supabase.co/realtime/v1/websocket"),
        ("http://127.0.0.1:4000", "ws://127.0.0.1:4000/realtime/v1/websocket"),
        ("https://ref.supabase.co/realtime/v1", "wss://ref.supabase.co/realtime/v1/websocket"),
        ("ws://h/socket", "ws://h/socket/websocket"),
        ("ws://h/socket/", "ws://h/socket/websocket"),
        ("wss://h:4443/socket", "wss://h:4443/socket/websocket"),
        ("ws://h/socket/websocket", "ws://h/socket/websocket"),
        (
            "wss://ref.supabase.co/realtime/v1/websocket",
            "wss://ref.supabase.co/realtime/v1/websocket",
        ),
        ("ws://h/websocket", "ws://h/websocket"),
        ("http://[::1]:4000", "ws://[::1]:4000/realtime/v1/websocket"),
    ],
)
def test_cl02_url_forms(url: str, expected: str) -> None:
    """CL-02: project URL -> ``/realtime/v1/websocket``; ``/socket`` -> ``/socket/websocket``;
    a full ``/websocket`` URL is kept; http(s) becomes ws(s)."""
    endpoint = websocket_url(url, apikey=KEY, vsn="1.0.0")
    assert endpoint.url.partition("?")[0] == expected
    assert query(endpoint) == [("apikey", KEY), ("vsn", "1.0.0")]


def test_cl02_query_has_apikey_vsn_and_log_level_when_set() -> None:
    """CL-02: ``apikey`` and ``vsn`` always, ``log_level`` only when given."""
    endpoint = websocket_url("https://ref.supabase.co", apikey=KEY, vsn="2.0.0", log_level="info")
    assert endpoint.url == (
        f"wss://ref.supabase.co/realtime/v1/websocket?apikey={KEY}&vsn=2.0.0&log_level=info"
    )
    endpoint = websocket_url("https://ref.supabase.co", apikey=KEY, vsn="2.0.0")
    assert "log_level" not in endpoint.url


def test_cl02_existing_query_is_kept_and_our_parameters_replace_theirs() -> None:
    """CL-02: other parameters survive; a stale apikey / vsn / log_level in the URL is replaced."""
    endpoint = websocket_url(
        "ws://localhost:4000/socket/websocket?apikey=old&x=1&vsn=9&log_level=debug",
        apikey=KEY,
        vsn="1.0.0",
    )
    assert query(endpoint) == [("x", "1"), ("apikey", KEY), ("vsn", "1.0.0")]


def test_cl02_apikey_is_url_encoded() -> None:
    """CL-02: an apikey with reserved characters survives the query string."""
    endpoint = websocket_url("https://h", apikey="a b&c=d/+", vsn="1.0.0")
    assert dict(query(endpoint))["apikey"] == "a b&c=d/+"


@pytest.mark.parametrize(
    ("url", "secure", "host", "port", "resource"),
    [
        ("https://ref.supabase.co", True, "ref.supabase.co", 443, "/realtime/v1/websocket"),
        ("http://127.0.0.1:4000", False, "127.0.0.1", 4000, "/realtime/v1/websocket"),
        ("ws://h/socket", False, "h", 80, "/socket/websocket"),
        ("wss://h:8443/socket/websocket", True, "h", 8443, "/socket/websocket"),
        ("http://[::1]:4000/socket", False, "::1", 4000, "/socket/websocket"),
    ],
)
def test_cl02_endpoint_parts(url: str, secure: bool, host: str, port: int, resource: str) -> None:
    """CL-02: the parts a transport needs: TLS or not, host, port and request resource."""
    endpoint = websocket_url(url, apikey=KEY, vsn="1.0.0")
    assert (endpoint.secure, endpoint.host, endpoint.port) == (secure, host, port)
    assert endpoint.resource == f"{resource}?apikey={KEY}&vsn=1.0.0"
    assert endpoint.url.startswith("wss://" if secure else "ws://")


@pytest.mark.parametrize(
    "url",
    [
        f"ftp://h/socket?apikey={KEY}",
        f"h/socket?apikey={KEY}",
        f"http:///socket?apikey={KEY}",
        f"http://h:99999/?apikey={KEY}",
        f"http://h:port/?apikey={KEY}",
        f"http://[::1/?apikey={KEY}",
        f"http://user:{KEY}@:80/",
    ],
)
def test_cl02_se01_bad_urls_raise_without_the_apikey(url: str) -> None:
    """CL-02, SE-01: a bad URL is a ValueError whose message holds no apikey or password."""
    with pytest.raises(ValueError, match="URL") as info:
        websocket_url(url, apikey=KEY, vsn="1.0.0")
    assert KEY not in str(info.value)
    assert KEY not in repr(info.value)


def test_se01_endpoint_repr_and_redacted_form_hide_the_apikey() -> None:
    """SE-01: an Endpoint in a log or traceback shows ``<redacted>``, not the key."""
    endpoint = websocket_url("https://ref.supabase.co?token=T0KEN", apikey=KEY, vsn="1.0.0")
    for text in (repr(endpoint), str(endpoint), endpoint.redacted):
        assert KEY not in text
        assert "T0KEN" not in text
        assert "apikey=<redacted>" in text
    assert KEY in endpoint.url  # the real URL, for the transport only


@pytest.mark.parametrize(
    "url",
    [
        "https://ref.supabase.co",
        "http://127.0.0.1:4000/socket?token=T0KEN&keep=a%20b",
        f"wss://user:{KEY}@h:8443/realtime/v1/websocket?access_token=x&APIKEY=old&keep=<1>",
        "ws://[::1]:4000/x/?vsn=2.0.0&log_level=info&e=",
    ],
)
def test_se01_endpoint_redacted_form_is_redact_url_of_its_url(url: str) -> None:
    """SE-01: the redacted form websocket_url builds from its parts is redact_url's."""
    endpoint = websocket_url(url, apikey=KEY, vsn="1.0.0", log_level="debug")
    assert endpoint.redacted == redact_url(endpoint.url)
    assert KEY not in endpoint.redacted


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"wss://h/realtime/v1/websocket?apikey={KEY}&vsn=1.0.0",
            "wss://h/realtime/v1/websocket?apikey=<redacted>&vsn=1.0.0",
        ),
        (
            "https://h/x?access_token=abc&token=def&keep=1",
            "https://h/x?access_token=<redacted>&token=<redacted>&keep=1",
        ),
        ("https://h/x?APIKEY=abc", "https://h/x?APIKEY=<redacted>"),
        (f"https://user:{KEY}@h/x", "https://<redacted>@h/x"),
        ("https://h/x", "https://h/x"),
        ("http://[bad", "<redacted>"),
    ],
)
def test_se01_redact_url(url: str, expected: str) -> None:
    """SE-01: secret query values and user info are replaced by ``<redacted>``."""
    assert redact_url(url) == expected


# -- RS-08: the URL's own apikey, vsn and log_level ----------------------------------------------


def test_rs08_url_options_come_from_the_query_when_no_keyword_is_given() -> None:
    """RS-08: ``apikey``, ``vsn`` and ``log_level`` in the query fill the keywords left out."""
    options = url_options(
        f"ws://h/socket/websocket?apikey={KEY}&vsn=2.0.0&log_level=info&x=1",
        apikey=None,
        vsn=None,
        log_level=None,
    )
    assert (options.apikey, options.vsn, options.log_level) == (KEY, "2.0.0", "info")
    assert KEY not in repr(options)
    options = url_options("https://h", apikey=KEY, vsn=None, log_level=None)
    assert (options.apikey, options.vsn, options.log_level) == (KEY, None, None)


def test_rs08_a_keyword_that_agrees_with_the_url_is_accepted() -> None:
    """RS-08: the same value in the URL and in the keyword is no contradiction."""
    options = url_options(
        f"ws://h/?apikey={KEY}&vsn=1.0.0", apikey=KEY, vsn="1.0.0", log_level=None
    )
    assert (options.apikey, options.vsn) == (KEY, "1.0.0")


@pytest.mark.parametrize(
    ("url", "keywords", "message"),
    [
        ("ws://h/?vsn=2.0.0", {"vsn": "1.0.0"}, "vsn='1.0.0' contradicts vsn='2.0.0' in the URL"),
        ("ws://h/?log_level=info", {"log_level": "error"}, "log_level='error' contradicts"),
        (
            f"ws://h/?apikey={KEY}",
            {"apikey": "other-key"},
            "the apikey given differs from the apikey in the URL",
        ),
        (f"ws://h/?apikey={KEY}&apikey=other", {}, "gives apikey twice"),
    ],
)
def test_rs08_a_contradicting_keyword_is_a_value_error(
    url: str, keywords: dict[str, str], message: str
) -> None:
    """RS-08: a keyword that contradicts the URL is a ValueError that never shows the apikey."""
    arguments: dict[str, str | None] = {"apikey": None, "vsn": None, "log_level": None}
    arguments.update(keywords)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        url_options(url, **arguments)
    assert KEY not in str(info.value)


async def test_rs08_open_realtime_honours_the_urls_query(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-08: ``open_realtime(server.websocket_url(vsn="2.0.0"))`` connects with 2.0.0, the
    URL's apikey and its log_level; a contradicting keyword fails before any I/O."""
    with trio.fail_after(5):
        async with serve_realtime(apikey=APIKEY) as server:
            url = server.websocket_url(vsn="2.0.0", log_level="info")
            async with open_realtime(url, transport=server.memory_transport) as client:
                assert client.vsn == "2.0.0"
                assert server.connections[0].vsn == "2.0.0"
                assert "log_level=info" in client.url
                assert APIKEY not in client.url
            with pytest.raises(ValueError, match="contradicts"):
                async with open_realtime(url, vsn="1.0.0", transport=server.memory_transport):
                    pass  # pragma: no cover
            assert server.statistics().connections_accepted == 1


async def test_rs08_vsn_none_takes_the_urls_and_an_empty_vsn_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """RS-08: ``vsn=None`` (a wrapper passing its own option through) means the URL's vsn,
    else 1.0.0, like leaving it out; an empty or non-string vsn is a ValueError, not 1.0.0."""
    with trio.fail_after(5):
        async with serve_realtime(apikey=APIKEY) as server:
            url = server.websocket_url(vsn="2.0.0")
            async with open_realtime(url, vsn=None, transport=server.memory_transport) as client:
                assert client.vsn == "2.0.0"
            plain = server.url  # no query at all
            async with open_realtime(
                plain, apikey=APIKEY, vsn=None, transport=server.memory_transport
            ) as client:
                assert client.vsn == "1.0.0"
            for bad in ("", 2, False):
                with pytest.raises(ValueError, match="unsupported vsn"):
                    async with open_realtime(
                        plain,
                        apikey=APIKEY,
                        vsn=bad,  # type: ignore[arg-type]
                        transport=server.memory_transport,
                    ):
                        pass  # pragma: no cover
            assert server.statistics().connections_accepted == 2


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        (
            "refused at ws://127.0.0.1:4000/realtime/v1/websocket?apikey=1&vsn=1.0.0 (HTTP 401)",
            "1",
            "refused at ws://127.0.0.1:4000/realtime/v1/websocket?apikey=<redacted>&vsn=1.0.0"
            " (HTTP 401)",
        ),
        ("cannot connect to 127.0.0.1:4001 after 1 attempt", "1", None),
        (f"the key {KEY}. and {KEY}x", KEY, f"the key <redacted>. and {KEY}x"),
        (f"apikey={KEY}&b=2", KEY, "apikey=<redacted>&b=2"),
        ("Authorization: Bearer abc.def.ghi", None, "Authorization: Bearer <redacted>"),
        ('{"access_token": "abc.def"}', None, '{"access_token": "<redacted>"}'),
        ("no apikey: pass --apikey, or set SUPABASE_ANON_KEY", "x", None),
    ],
)
def test_rs12_redact_touches_only_secret_values(
    text: str, secret: str | None, expected: str | None
) -> None:
    """RS-12: secrets are replaced where they are values (query, field, header, whole word),
    never inside other text: ``--apikey 1`` leaves ``127.0.0.1`` alone."""
    assert redact(text, secret) == (text if expected is None else expected)
