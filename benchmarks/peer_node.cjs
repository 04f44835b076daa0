// A node `ws` peer for the send and connection benchmarks: replies ok to every push.
//
//   node peer_node.cjs [--port 0]
//
// Prints `PORT <n>` once listening and exits when its standard input closes. It speaks vsn
// 1.0.0 (JSON objects) and the text frames of 2.0.0 (JSON arrays): `phx_join` is answered ok
// with `{"postgres_changes": []}`, `heartbeat` ok, `phx_leave` ok followed by `phx_close`, and
// a `broadcast` on a joined channel is echoed when the join asked for `broadcast.self` and
// answered ok when it asked for `broadcast.ack`. Binary frames (2.0.0 user broadcasts) and
// anything it cannot parse are ignored. Replies to one chunk of input leave in one write
// (the socket is corked until the next tick). It is installed beside `ws` in the suite's
// temporary folder (see benchmarks/_node.py); node's event loop keeps it off the client's
// critical path far more cheaply than the Python peer can at thousands of connections.
'use strict';

const { WebSocketServer } = require('ws');

function flag(value) {
  return value === true || value === 'true';
}

function serve(port) {
  const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false, backlog: 4096 });
  server.on('listening', () => {
    process.stdout.write(`PORT ${server.address().port}\n`);
  });
  server.on('connection', (ws, request) => {
    const query = new URL(request.url, 'http://x').searchParams;
    const arrays = query.get('vsn') === '2.0.0';
    const joined = new Map();
    const socket = ws._socket;
    let corked = false;
    socket.setNoDelay(true);

    function send(topic, event, payload, ref, joinRef) {
      if (!corked) {
        corked = true;
        socket.cork();
        process.nextTick(() => {
          corked = false;
          socket.uncork();
        });
      }
      const text = arrays
        ? JSON.stringify([joinRef ?? null, ref ?? null, topic, event, payload])
        : JSON.stringify({ topic, event, payload, ref: ref ?? null, join_ref: joinRef ?? null });
      ws.send(text);
    }

    function reply(topic, ref, joinRef, response) {
      send(topic, 'phx_reply', { status: 'ok', response }, ref, joinRef);
    }

    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      let joinRef, ref, topic, event, payload;
      try {
        const message = JSON.parse(data);
        if (arrays) {
          [joinRef, ref, topic, event, payload] = message;
        } else {
          ({ topic, event, payload, ref, join_ref: joinRef } = message);
        }
      } catch (err) {
        return;
      }
      if (event === 'heartbeat') {
        reply(topic, ref, null, {});
      } else if (event === 'phx_join') {
        const broadcast = (payload && payload.config && payload.config.broadcast) || {};
        const channelRef = joinRef ?? ref;
        joined.set(topic, { joinRef: channelRef, self: flag(broadcast.self), ack: flag(broadcast.ack) });
        reply(topic, ref, joinRef, { postgres_changes: [] });
      } else if (event === 'phx_leave') {
        const channel = joined.get(topic);
        joined.delete(topic);
        const channelRef = channel ? channel.joinRef : joinRef;
        reply(topic, ref, channelRef, {});
        send(topic, 'phx_close', {}, channelRef, channelRef);
      } else if (event === 'broadcast') {
        const channel = joined.get(topic);
        if (!channel) return;
        if (channel.self) send(topic, 'broadcast', payload, null, null);
        if (channel.ack) reply(topic, ref, channel.joinRef, {});
      }
    });
    ws.on('error', () => {});
  });
}

const portIndex = process.argv.indexOf('--port');
serve(portIndex > 0 ? Number(process.argv[portIndex + 1]) : 0);
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.stdin.on('error', () => process.exit(0));
