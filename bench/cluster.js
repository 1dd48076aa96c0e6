// Node's side of the cluster workload (bench/cluster_load.py loads it with wrk): Node's cluster
// with node:http, the same handler as bench/cluster_hello.cpp. The primary forks the workers on
// 127.0.0.1, port 0 unless --port is given, and prints `ready <port>` once every worker is
// listening; SIGTERM or SIGINT disconnects the workers (cluster.disconnect), then it exits 0.
// --scheduling shared is SCHED_NONE, round_robin SCHED_RR (Node's default); Node 20 has no
// reusePort (it came in 22.12), so there is no reuse_port here.
//
// Usage: node bench/cluster.js [--workers N] [--scheduling shared|round_robin] [--port P]
'use strict';
const cluster = require('node:cluster');
const http = require('node:http');

function usage(why) {
  console.error(`cluster.js: ${why}\nusage: node bench/cluster.js [--workers N] ` +
                '[--scheduling shared|round_robin] [--port P]');
  process.exit(2);
}

const settings = { workers: 1, scheduling: 'shared', port: 0 };
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i += 2) {
  if (i + 1 >= argv.length) usage('an option without its value');
  const [name, value] = [argv[i], argv[i + 1]];
  if (name === '--workers') settings.workers = Number(value);
  else if (name === '--scheduling') settings.scheduling = value;
  else if (name === '--port') settings.port = Number(value);
  else usage(`unknown option ${name}`);
}
if (!(settings.workers >= 1)) usage('--workers must be at least 1');
if (settings.scheduling !== 'shared' && settings.scheduling !== 'round_robin')
  usage(`no scheduling ${settings.scheduling} in Node ${process.version}`);

if (cluster.isWorker) {
  // With a Content-Length, as Beast's answer has: without it, writeHead() makes end() chunked.
  const body = Buffer.from('hello world');
  const headers = { 'Content-Type': 'text/plain', 'Content-Length': body.length };
  http.createServer((req, res) => {
    res.writeHead(200, headers);
    res.end(body);
  }).listen(settings.port, '127.0.0.1');
  return;
}

// Read at the first fork: set before it.
cluster.schedulingPolicy =
  settings.scheduling === 'round_robin' ? cluster.SCHED_RR : cluster.SCHED_NONE;
let listening = 0;
let stopping = false;
let status = 0;
cluster.on('listening', (worker, address) => {
  if (++listening === settings.workers) console.log(`ready ${address.port}`);
});
cluster.on('exit', (worker, code, signal) => {
  if (stopping) return;
  console.error(`cluster.js: worker ${worker.id} exited (code ${code}, signal ${signal})`);
  status = 1; // a worker lost is a failed run: not restarted
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => {
    stopping = true;
    cluster.disconnect(() => process.exit(status));
  });
}
for (let i = 0; i < settings.workers; ++i) cluster.fork();
