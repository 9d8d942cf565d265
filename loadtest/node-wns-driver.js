// Drives the npm package `wns` (node-wns 0.5.4) against the loopback target, for
// loadtest/run. Usage:
//   NODE_EXTRA_CA_CERTS=ca.pem node node-wns-driver.js PORT COUNT CONCURRENCY SOCKETS
// Prints one JSON line: throughput, CPU seconds, peak RSS, outcome counts.
//
// node-wns hard-codes port 443 and resolves the channel's host through DNS. The
// driver leaves the library untouched and wraps `https.request` (which wns.js
// looks up on every call): the port becomes the target's, DNS is replaced by a
// `lookup` that answers 127.0.0.1, and requests share one keep-alive agent with
// SOCKETS sockets (the same connection count the other HTTP/1.1 runs use). TLS
// is verified as usual; the test CA comes from NODE_EXTRA_CA_CERTS, and SNI is
// still the channel's host name.
'use strict';
const https = require('https');
const path = require('path');

const [port, count, concurrency, sockets] = process.argv.slice(2).map(Number);
if (!port || !count || !concurrency || !sockets) {
  console.error('usage: node node-wns-driver.js PORT COUNT CONCURRENCY SOCKETS');
  process.exit(2);
}

const agent = new https.Agent({ keepAlive: true, maxSockets: sockets });
const lookup = (hostname, opts, cb) => {
  if (typeof opts === 'function') cb = opts;
  if (opts && opts.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
  else cb(null, '127.0.0.1', 4);
};
const realRequest = https.request;
https.request = function (options, cb) {
  const o = Object.assign({}, options, { port, agent, lookup });
  o.servername = options.hostname || options.host;
  return realRequest.call(https, o, cb);
};

const wns = require(path.join(process.env.WNS_MODULE_DIR || '.', 'node_modules', 'wns'));

const headers = {
  'Content-Type': 'application/octet-stream',
  'X-WNS-Cache-Policy': 'cache',
};
const options = { client_id: 'ms-app://S-1-15-2-1', client_secret: 'bench', headers };
const outcomes = {};
let next = 0;
let done = 0;
let start;
let peakRss = 0;
const rssTimer = setInterval(() => {
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
}, 100);

function record(err) {
  const k = err ? String(err.statusCode || err.message).slice(0, 60) : 'received';
  outcomes[k] = (outcomes[k] || 0) + 1;
}

function finish() {
  const secs = Number(process.hrtime.bigint() - start) / 1e9;
  const cpu = process.cpuUsage(cpu0);
  peakRss = Math.max(peakRss, process.memoryUsage().rss);
  clearInterval(rssTimer);
  const cpuS = (cpu.user + cpu.system) / 1e6;
  console.log(JSON.stringify({
    tool: 'node-wns',
    version: require(path.join(process.env.WNS_MODULE_DIR || '.', 'node_modules', 'wns', 'package.json')).version,
    node: process.version,
    notifications: done,
    elapsed_s: secs,
    throughput_per_s: done / secs,
    cpu_user_s: cpu.user / 1e6,
    cpu_sys_s: cpu.system / 1e6,
    cpu_s_per_1000: (cpuS * 1000) / done,
    peak_rss_kb: Math.round(peakRss / 1024),
    concurrency,
    sockets,
    outcomes,
  }));
  agent.destroy();
  process.exit(0);
}

function one() {
  if (next >= count) return;
  const i = next++;
  wns.sendRaw(`https://bench.notify.windows.com/?token=ok.${i}`, 'wake', options, (err) => {
    record(err);
    done++;
    if (done === count) finish();
    else one();
  });
}

let cpu0;
// The first send fetches the token; later sends reuse it (the library's documented use).
wns.sendRaw('https://bench.notify.windows.com/?token=warmup', 'wake', options, (err, res) => {
  const token = (res && res.newAccessToken) || (err && err.newAccessToken);
  if (!token) {
    console.error('node-wns: no access token:', err && err.message);
    process.exit(1);
  }
  options.accessToken = token;
  start = process.hrtime.bigint();
  cpu0 = process.cpuUsage();
  for (let c = 0; c < concurrency; c++) one();
});
