// BullMQ's side of the remote workload (bench/remote_bench.cpp is childproc's and raw hiredis's):
// a task's round trip through Redis with 1 and 64 tasks in flight. A Queue adds each job, a
// QueueEvents reads its "completed" event (BullMQ's way to wait for a result); 2 Worker processes
// (as childproc's 2 agents), each with concurrency 32, run the jobs in BullMQ's default sandboxed
// mode: the processor file bench/remote_bullmq_processor.js in child processes. Each job is a
// 16-byte payload echoed back. The redis-server is private, started here with remote_bench's
// flags on a unix socket (ioredis's `path`), and stopped at the end, as are the Workers.
//
// Usage: node bench/remote_bullmq.js [quick]    (bullmq found through NODE_PATH)
// Output: `bullmq remote <metric> <value> <unit>`: tasks_f<N> (tasks/s), p50_f<N>, p99_f<N> (µs).
'use strict';
const { spawn, fork } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const WORKERS = 2;
const CONCURRENCY = 32; // per Worker: 64 slots in all, as the agents' 2 × --concurrency 32
const WINDOWS = [1, 64];
const PAYLOAD = 'x'.repeat(16);
const QUEUE = 'bench';

const connectionOf = (socket) => ({ path: socket, maxRetriesPerRequest: null });

// A Worker process: runs jobs until told to stop, then closes (which ends its sandbox children).
async function workerMain(socket) {
  const { Worker } = require('bullmq');
  // Each sandbox child's output is piped into this process's: 32 of them exceed Node's default
  // of 10 listeners, which is expected here, not a leak.
  process.stdout.setMaxListeners(0);
  process.stderr.setMaxListeners(0);
  const worker = new Worker(QUEUE, path.join(__dirname, 'remote_bullmq_processor.js'), {
    connection: connectionOf(socket),
    concurrency: CONCURRENCY,
  });
  worker.on('error', (e) => console.error(`bullmq worker: ${e.message}`));
  await worker.waitUntilReady();
  process.send('ready');
  process.on('message', async () => {
    await worker.close();
    process.exit(0);
  });
  process.on('disconnect', () => process.exit(1)); // the bench died: do not linger
}

function waitFor(what, bound, check) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: not within ${bound} ms`)), bound);
    check(() => {
      clearTimeout(timer);
      resolve();
    }, (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

// The private server; resolves once it accepts connections.
async function startServer(dir, socket) {
  const server = spawn('redis-server', ['--port', '0', '--unixsocket', socket, '--save', '',
    '--appendonly', 'no', '--dir', dir, '--daemonize', 'no'], { stdio: ['ignore', 'pipe', 'inherit'] });
  let log = '';
  await waitFor('redis-server', 10000, (ok, fail) => {
    server.on('error', fail);
    server.on('exit', () => fail(new Error(`redis-server exited: ${log}`)));
    server.stdout.on('data', (d) => {
      log += d;
      if (log.includes('ready to accept connections')) ok();
    });
  });
  return server;
}

// The Worker processes, each in a process group of its own (detached) so that stop() can kill
// whatever sandbox children a Worker left.
async function startWorkers(socket) {
  const workers = [];
  for (let i = 0; i < WORKERS; ++i)
    workers.push(fork(__filename, ['worker', socket], { detached: true, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  await Promise.all(workers.map((w) => waitFor('a BullMQ Worker', 30000, (ok, fail) => {
    w.on('message', ok);
    w.on('exit', () => fail(new Error('a BullMQ Worker exited')));
  })));
  return workers;
}

// SIGTERM (or `ask` for a Worker) first, SIGKILL of the whole group after 10 s; resolves once
// the process was reaped.
async function stop(child, ask) {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.on('exit', resolve));
  ask();
  const late = setTimeout(() => child.kill('SIGKILL'), 10000);
  await exited;
  clearTimeout(late);
}

function killGroup(pid) {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch (e) {
    if (e.code !== 'ESRCH') throw e;
  }
}

// The jobs waiting for their "completed" event (QueueEvents parses the return value). An event
// may come before queue.add() has resolved with the job's id: it is kept until then.
class Waiting {
  constructor() {
    this.handlers = new Map();
    this.early = new Map();
  }
  on(id, handler) {
    if (!this.early.has(id)) return this.handlers.set(id, handler);
    const value = this.early.get(id);
    this.early.delete(id);
    handler(value);
  }
  complete(id, value) {
    const handler = this.handlers.get(id);
    if (!handler) return this.early.set(id, value);
    this.handlers.delete(id);
    handler(value);
  }
}

function pct(v, p) {
  if (v.length === 0) return 0;
  const s = [...v].sort((a, b) => a - b);
  const idx = (s.length - 1) * p;
  const lo = Math.floor(idx);
  const hi = Math.min(lo + 1, s.length - 1);
  return s[lo] + (s[hi] - s[lo]) * (idx - lo);
}

// utime + stime of a process in seconds (/proc/<pid>/stat); 0 once it is gone.
function cpuSeconds(pid) {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100; // USER_HZ, 100 on Linux
  } catch (e) {
    return 0;
  }
}

function childrenOf(pid) {
  try {
    return fs.readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch (e) {
    return [];
  }
}

// The counters around each slice, as remote_bench's: the server's commands and CPU time (INFO),
// and the CPU time of this process, the Workers and their sandbox children.
async function counters(redis, workers) {
  const info = await redis.info('everything');
  const number = (key) => Number(info.match(new RegExp(`\\r\\n${key}:([0-9.]+)`))[1]);
  const self = process.cpuUsage();
  let client = (self.user + self.system) / 1e6;
  for (const w of workers) {
    client += cpuSeconds(w.pid);
    for (const child of childrenOf(w.pid)) client += cpuSeconds(child);
  }
  return { commands: number('total_commands_processed'),
    server: number('used_cpu_sys') + number('used_cpu_user'), client };
}

async function around(redis, workers, cell, run) {
  const before = await counters(redis, workers);
  await run();
  const after = await counters(redis, workers);
  cell.commands += after.commands - before.commands - 1; // not the INFO itself
  cell.serverCpu += (after.server - before.server) * 1e6;
  cell.clientCpu += (after.client - before.client) * 1e6;
}

// One closed-loop slice of `window` jobs for `sliceMs`; adds to `cell`.
function slice(queue, waiting, window, sliceMs, cell) {
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(sliceMs) * 1000000n;
  let sent = 0;
  let done = 0;
  return waitFor('BullMQ jobs', sliceMs + 30000, (ok, fail) => {
    const submit = () => {
      ++sent;
      const at = process.hrtime.bigint();
      queue.add('echo', { p: PAYLOAD }, { removeOnComplete: true, removeOnFail: true }).then((job) => {
        waiting.on(job.id, (returned) => {
          if (returned !== PAYLOAD) return fail(new Error('the echo came back changed'));
          const now = process.hrtime.bigint();
          cell.latency.push(Number(now - at) / 1e3);
          if (++done === sent && now >= end) {
            cell.tasks += done;
            cell.seconds += Number(now - t0) / 1e9;
            return ok();
          }
          if (now < end) submit();
        });
      }, fail);
    };
    for (let i = 0; i < window; ++i) submit();
  });
}

async function measure(socket, workers, quick) {
  const { Queue, QueueEvents } = require('bullmq');
  const IORedis = require('ioredis');
  const queue = new Queue(QUEUE, { connection: connectionOf(socket) });
  const events = new QueueEvents(QUEUE, { connection: connectionOf(socket) });
  const waiting = new Waiting();
  events.on('completed', ({ jobId, returnvalue }) => waiting.complete(jobId, returnvalue));
  events.on('failed', ({ jobId, failedReason }) => console.error(`bullmq: job ${jobId} failed: ${failedReason}`));
  const probe = new IORedis(connectionOf(socket));
  await Promise.all([queue.waitUntilReady(), events.waitUntilReady()]);
  const [rounds, sliceMs, warmupMs] = quick ? [1, 600, 150] : [3, 1000, 300];
  const newCell = () => ({ tasks: 0, seconds: 0, latency: [], commands: 0, serverCpu: 0, clientCpu: 0 });
  const cells = WINDOWS.map(newCell);
  for (const w of WINDOWS) await slice(queue, waiting, w, warmupMs, newCell());
  for (let r = 0; r < rounds; ++r)
    for (let k = 0; k < WINDOWS.length; ++k)
      await around(probe, workers, cells[k], () => slice(queue, waiting, WINDOWS[k], sliceMs, cells[k]));
  WINDOWS.forEach((w, k) => {
    const c = cells[k];
    console.log(`bullmq remote tasks_f${w} ${(c.tasks / c.seconds).toFixed(1)} tasks/s`);
    console.log(`bullmq remote p50_f${w} ${pct(c.latency, 0.5).toFixed(1)} us`);
    console.log(`bullmq remote p99_f${w} ${pct(c.latency, 0.99).toFixed(1)} us`);
    console.log(`bullmq remote commands_f${w} ${(c.commands / c.tasks).toFixed(2)} commands/task`);
    console.log(`bullmq remote server_cpu_f${w} ${(c.serverCpu / c.tasks).toFixed(1)} us/task`);
    console.log(`bullmq remote client_cpu_f${w} ${(c.clientCpu / c.tasks).toFixed(1)} us/task`);
  });
  probe.disconnect();
  await events.close();
  await queue.close();
}

async function main(quick) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'childproc-bullmq-'));
  const socket = path.join(dir, 'redis.sock');
  let server = null;
  let workers = [];
  try {
    server = await startServer(dir, socket);
    workers = await startWorkers(socket);
    await measure(socket, workers, quick);
  } finally {
    await Promise.all(workers.map((w) => stop(w, () => w.connected && w.send('stop'))));
    for (const w of workers) killGroup(w.pid);
    if (server) await stop(server, () => server.kill('SIGTERM'));
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[2] === 'worker') {
  workerMain(process.argv[3]).catch((e) => {
    console.error(`bullmq worker: ${e.stack}`);
    process.exit(1);
  });
} else {
  main(process.argv[2] === 'quick').catch((e) => {
    console.error(`bullmq: ${e.stack || e}`);
    process.exitCode = 1;
  });
}
