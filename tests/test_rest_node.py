"""The official client against the local server: realtime-js (node) and trio_realtime together.

Real sockets and the real clock (node is a separate process); ``trio.fail_after(GUARD)`` only
guards against a hang. Skipped without node and npm, except under CI (see ``tests/_node.py``).
"""

from __future__ import annotations

import trio
from _node import realtime_js
from conftest import APIKEY

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
