// The realtime-js side of the benchmarks; runs under node with realtime-js and ws installed in a
// temporary folder by the suite (benchmarks/_node.py), never a dependency of this project.
//
//   node realtime_js_worker.cjs sends --port P --n N --senders S [--ack]
//   node realtime_js_worker.cjs connections --port P --count K [--idle-seconds W]
//   node realtime_js_worker.cjs throughput --port P --n N
//
// Each prints one JSON object as its last line, in the shape the Python workers use.
'use strict';

const { RealtimeClient } = require('@supabase/realtime-js');
const WebSocket = require('ws');
const fs = require('fs');

function args() {
  const out = { what: process.argv[2] };
  const rest = process.argv.slice(3);
  for (let i = 0; i < rest.length; i++) {
    const key = rest[i].replace(/^--/, '');
    const next = rest[i + 1];
    if (next === undefined || next.startsWith('--')) {
      out[key] = true;
    } else {
      out[key] = next;
      i++;
    }
  }
  return out;
}

function rssKib() {
  const status = fs.readFileSync('/proc/self/status', 'ascii');
  const match = /VmRSS:\s+(\d+)/.exec(status);
  return match ? Number(match[1]) : 0;
}

function cpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

function now() {
  return Number(process.hrtime.bigint()) / 1e9;
}

function percentile(sorted, fraction) {
  const index = Math.min(sorted.length - 1, Math.max(0, Math.round(fraction * sorted.length) - 1));
  return sorted[index];
}

function newClient(port, heartbeatMs) {
  return new RealtimeClient(`ws://127.0.0.1:${port}/socket`, {
    params: { apikey: 'bench' },
    transport: WebSocket,
    heartbeatIntervalMs: heartbeatMs,
    vsn: '1.0.0',
    logger: () => {},
  });
}

function subscribe(channel) {
  return new Promise((resolve, reject) => {
    channel.subscribe((status, err) => {
      if (status === 'SUBSCRIBED') resolve();
      else if (status !== 'CLOSED') reject(new Error(`${status}: ${err}`));
    });
  });
}

async function sends(port, n, senders, ack) {
  const client = newClient(port, 25000);
  const channel = client.channel('send', { config: { broadcast: { self: false, ack } } });
  await subscribe(channel);
  const warmup = Math.min(1000, Math.floor(n / 10));
  for (let i = 0; i < warmup; i++) {
    const status = await channel.send({ type: 'broadcast', event: 'm', payload: { n: i, text: 'hello' } });
    if (status !== 'ok') throw new Error(`warm-up send: ${status}`);
  }
  const latencies = [];
  let failed = 0;
  const t0 = now();
  const c0 = cpuSeconds();
  const perSender = Math.floor(n / senders);
  async function sender(s) {
    for (let i = 0; i < perSender; i++) {
      const started = now();
      const status = await channel.send({
        type: 'broadcast',
        event: 'm',
        payload: { n: s * perSender + i, text: 'hello' },
      });
      if (status !== 'ok') failed++;
      if (ack) latencies.push(now() - started);
    }
  }
  const tasks = [];
  for (let s = 0; s < senders; s++) tasks.push(sender(s));
  await Promise.all(tasks);
  const t1 = now();
  const c1 = cpuSeconds();
  const sent = perSender * senders;
  latencies.sort((a, b) => a - b);
  return {
    messages: sent,
    failed,
    seconds: t1 - t0,
    rate: sent / (t1 - t0),
    cpu_us: ((c1 - c0) / sent) * 1e6,
    p50_us: latencies.length ? percentile(latencies, 0.5) * 1e6 : null,
    p99_us: latencies.length ? percentile(latencies, 0.99) * 1e6 : null,
  };
}

async function pool(count, concurrency, job) {
  let next = 0;
  async function runner() {
    while (next < count) {
      const i = next++;
      await job(i);
    }
  }
  const runners = [];
  for (let r = 0; r < Math.min(concurrency, count); r++) runners.push(runner());
  await Promise.all(runners);
}

function connect(client) {
  // realtime-js has no public "connected" promise: its socket adapter's open callback is the
  // signal (registered before connecting, so it cannot be missed).
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('connect timed out')), 10000);
    client.socketAdapter.onOpen(() => {
      clearTimeout(timer);
      resolve();
    });
    client.connect();
  });
}

async function connections(port, count, idleSeconds, heartbeatMs, concurrency) {
  if (global.gc) global.gc();
  const rss0 = rssKib();
  const clients = new Array(count);
  const t0 = now();
  await pool(count, concurrency, async (i) => {
    const client = newClient(port, heartbeatMs);
    clients[i] = client;
    await connect(client);
  });
  const connectS = now() - t0;
  if (global.gc) global.gc();
  const rss1 = rssKib();
  const t1 = now();
  const channels = new Array(count);
  await pool(count, concurrency, async (i) => {
    const channel = clients[i].channel(`conn-${i}`, { config: { broadcast: { self: false, ack: false } } });
    channel.on('broadcast', { event: 'msg' }, () => {});
    channels[i] = channel;
    await subscribe(channel);
  });
  const joinS = now() - t1;
  if (global.gc) global.gc();
  const rss2 = rssKib();
  const c0 = cpuSeconds();
  const w0 = now();
  await new Promise((resolve) => setTimeout(resolve, idleSeconds * 1000));
  const c1 = cpuSeconds();
  const w1 = now();
  const connected = clients.filter((c) => c.isConnected()).length;
  return {
    count,
    connected_after_idle: connected,
    connect_s: connectS,
    join_s: joinS,
    connect_rate: count / connectS,
    join_rate: count / joinS,
    connect_join_rate: count / (connectS + joinS),
    rss_per_connection_kib: (rss1 - rss0) / count,
    rss_per_channel_kib: (rss2 - rss1) / count,
    idle_cpu_pct: ((c1 - c0) / (w1 - w0)) * 100,
    rss_kib: rss2,
  };
}

async function throughput(port, n) {
  // Counts a flood of n broadcasts in an on('broadcast') callback; the clocks run from the
  // subscribe (the flood is requested) to the n-th message, as for the Python clients.
  const client = newClient(port, 25000);
  const channel = client.channel(`flood:${n}:0`, { config: { broadcast: { self: false, ack: false } } });
  let count = 0;
  const done = new Promise((resolve) => {
    channel.on('broadcast', { event: 'msg' }, () => {
      count++;
      if (count >= n) resolve();
    });
  });
  const t0 = now();
  const c0 = cpuSeconds();
  await subscribe(channel);
  await done;
  const t1 = now();
  const c1 = cpuSeconds();
  return { messages: n, seconds: t1 - t0, rate: n / (t1 - t0), cpu_us: ((c1 - c0) / n) * 1e6 };
}

async function main() {
  const a = args();
  const port = Number(a.port);
  let result;
  if (a.what === 'sends') {
    result = await sends(port, Number(a.n || 20000), Number(a.senders || 1), a.ack === true);
  } else if (a.what === 'throughput') {
    result = await throughput(port, Number(a.n || 100000));
  } else if (a.what === 'connections') {
    result = await connections(
      port,
      Number(a.count || 1000),
      Number(a['idle-seconds'] || 30),
      Number(a['heartbeat-ms'] || 15000),
      Number(a.concurrency || 64),
    );
  } else {
    throw new Error(`unknown measurement ${a.what}`);
  }
  result.version = require('@supabase/realtime-js/package.json').version;
  process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(String(err && err.stack ? err.stack : err) + '\n');
  process.exit(1);
});
