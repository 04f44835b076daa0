"""The official client against the local server: realtime-js (node) and trio_realtime together.

Real sockets and the real clock (node is a separate process); ``trio.fail_after(GUARD)`` only
guards against a hang. Skipped without node and npm, except under CI (see ``tests/_node.py``).
"""

from __future__ import annotations

import pytest
import trio
from _node import realtime_js
from conftest import APIKEY

from trio_realtime import Vsn, open_realtime
from trio_realtime.testing import RealtimeServer, serve_realtime

GUARD = 60.0

LISTEN = r"""
const { RealtimeClient } = require('@supabase/realtime-js');
const WebSocket = require('ws');
const [url, apikey, topic, event] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const client = new RealtimeClient(url, { params: { apikey }, transport: WebSocket });
const channel = client.channel(topic);
channel.on('broadcast', { event }, (message) => {
  out({ received: message });
  client.disconnect();
  setTimeout(() => process.exit(0), 10);
});
channel.subscribe((status) => out({ status }));
"""


def socket_base(server: RealtimeServer) -> str:
    """The endpoint realtime-js takes: it appends ``/websocket`` (and derives ``/api/...``)."""
    return "ws" + server.url.removeprefix("http") + "/realtime/v1"


async def test_realtime_js_subscribes_and_receives_a_broadcast_from_the_local_server() -> None:
    """realtime-js joins the local server and gets a broadcast sent there (the helper works)."""
    node = realtime_js()
    with trio.fail_after(GUARD):
        async with serve_realtime(apikey=APIKEY) as server:
            args = (socket_base(server), APIKEY, "room:node", "ping")
            async with node.start("listen.js", LISTEN, *args) as (process, lines):
                assert await lines.next() == {"status": "SUBSCRIBED"}
                await server.wait_until_joined("room:node")
                await server.broadcast("room:node", "ping", {"n": 1})
                received = await lines.next()
                assert received == {
                    "received": {"event": "ping", "payload": {"n": 1}, "type": "broadcast"}
                }
                assert await process.wait() == 0


SEND = r"""
const { RealtimeClient } = require('@supabase/realtime-js');
const WebSocket = require('ws');
const [url, apikey, topic, privateTopic] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const client = new RealtimeClient(url, { params: { apikey }, transport: WebSocket });
const channel = client.channel(topic);
const secret = client.channel(privateTopic, { config: { private: true } });
(async () => {
  out({ httpSend: await channel.httpSend('via-httpSend', { n: 1 }) });
  out({ send: await channel.send({ type: 'broadcast', event: 'via-send', payload: { n: 2 } }) });
  out({ binary: await channel.httpSend('via-bytes', new Uint8Array([1, 2, 3])) });
  out({ private: await secret.httpSend('via-private', { n: 4 }) });
  out({ connected: client.isConnected() });
  process.exit(0);
})().catch((error) => {
  out({ error: String(error) });
  process.exit(1);
});
"""


@pytest.mark.parametrize("vsn", ["1.0.0", "2.0.0"])
async def test_rb05_realtime_js_http_send_and_send_before_subscribe_reach_trio_realtime(
    vsn: Vsn,
) -> None:
    """RB-05: realtime-js ``httpSend()`` (JSON, bytes, private) and its ``send()`` before
    subscribing (the REST batch endpoint) reach a trio_realtime subscriber through the local
    server; realtime-js never opens a socket for them."""
    node = realtime_js()
    with trio.fail_after(GUARD):
        async with serve_realtime(apikey=APIKEY) as server:
            async with open_realtime(server.url, apikey=APIKEY, vsn=vsn) as client:
                public = client.channel("room:js")
                secret = client.channel("room:js-private", private=True)
                public_messages = public.broadcasts()
                private_messages = secret.broadcasts()
                async with public, secret:
                    args = (socket_base(server), APIKEY, "room:js", "room:js-private")
                    result = await node.run("send.js", SEND, *args)
                    assert result.returncode == 0, result.stderr
                    assert result.lines == [
                        {"httpSend": {"success": True}},
                        {"send": "ok"},
                        {"binary": {"success": True}},
                        {"private": {"success": True}},
                        {"connected": False},
                    ]
                    received = [await public_messages.receive() for _ in range(2)]
                    if vsn == "2.0.0":
                        received.append(await public_messages.receive())
                    secret_message = await private_messages.receive()
                    assert server.statistics().connections_accepted == 1  # ours only
    assert [(m.event, m.payload) for m in received] == [
        ("via-httpSend", {"n": 1}),
        ("via-send", {"n": 2}),
        *([("via-bytes", b"\x01\x02\x03")] if vsn == "2.0.0" else []),
    ]
    assert (secret_message.event, secret_message.payload) == ("via-private", {"n": 4})
    assert "falling back to REST" in result.stderr


REPLAY = r"""
const { RealtimeClient } = require('@supabase/realtime-js');
const WebSocket = require('ws');
const [url, apikey, topic, since, count] = process.argv.slice(2);
const out = (value) => process.stdout.write(JSON.stringify(value) + '\n');
const client = new RealtimeClient(url, { params: { apikey }, transport: WebSocket });
const channel = client.channel(topic, {
  config: { private: true, broadcast: { replay: { since: Number(since), limit: 10 } } },
});
const received = [];
channel.on('broadcast', { event: '*' }, (message) => {
  received.push(message);
  if (received.length === Number(count)) {
    out({ received });
    client.disconnect();
    setTimeout(() => process.exit(0), 10);
  }
});
channel.subscribe((status) => out({ status }));
"""


async def test_rp02_realtime_js_replay_config_gets_stored_messages() -> None:
    """RP-02, RP-03: realtime-js's own ``config.broadcast.replay`` on a private channel gets the
    local server's stored messages, with ``meta.replayed`` and ``meta.id``."""
    node = realtime_js()
    with trio.fail_after(GUARD):
        async with serve_realtime(apikey=APIKEY) as server:
            first = await server.realtime_send("room:replay", "chat", {"n": 1})
            second = await server.realtime_send("room:replay", "chat", {"n": 2})
            args = (socket_base(server), APIKEY, "room:replay", "0", "2")
            result = await node.run("replay.js", REPLAY, *args)
    assert result.returncode == 0, result.stderr
    # The replayed messages follow the join reply at once: realtime-js may hand them over
    # before it reports SUBSCRIBED, so only the content is checked, not the order of lines.
    (final,) = [line for line in result.lines if isinstance(line, dict) and "received" in line]
    assert [(m["payload"], m["meta"]) for m in final["received"]] == [
        ({"n": 1}, {"id": first, "replayed": True}),
        ({"n": 2}, {"id": second, "replayed": True}),
    ]
