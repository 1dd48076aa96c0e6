// childproc-pool-worker.js: lets a Node script be a childproc::pool worker (docs/pool.md).
//
//   const { serve } = require('/usr/share/childproc/childproc-pool-worker.js');
//   serve({ default: (data, ctx) => data, sum: ({ a, b }) => a + b },
//         { onInit(workerData) {}, onBroadcast(update) {} });
//
// It speaks the pool's envelope over Node's IPC channel (the pool forks the script with its
// node_json serialization). CommonJS, no dependencies.
'use strict';

function ignore() {}

function isBufferJson(m) {
  return m !== null && typeof m === 'object' && m.type === 'Buffer' && Array.isArray(m.data) &&
         Object.keys(m).length === 2;
}

function asBuffer(value) {
  if (Buffer.isBuffer(value)) return value;
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  return null;
}

// What the caller receives for a thrown value: {"name", "message"}.
function errorOf(thrown) {
  if (thrown instanceof Error) return { name: String(thrown.name || 'Error'), message: String(thrown.message) };
  return { name: 'Error', message: String(thrown) };
}

function serve(handlers, options = {}) {
  if (typeof process.send !== 'function') {
    throw new Error('childproc-pool-worker: this process has no IPC channel (a childproc::pool starts it)');
  }
  // The worker's own children are not pool workers.
  delete process.env.CHILDPROC_POOL_WORKER;

  // A function serves every name; an object's `default` key is the default handler ("").
  const table = new Map();
  const every = typeof handlers === 'function' ? handlers : null;
  if (!every) {
    for (const [key, handler] of Object.entries(handlers || {})) table.set(key === 'default' ? '' : key, handler);
  }
  const live = new Map(); // id -> the task's state, until its done or fail is sent
  let pendingBytes = null; // an envelope whose bytes payload is the next message
  let initState = 'waiting'; // 'waiting' -> 'running' (an async onInit) -> 'ready'
  const held = []; // envelopes that arrived while an async onInit ran
  let stopped = false;

  function send(envelope, bytes) {
    if (stopped || !process.connected) return;
    // With a callback, a failed write (the pool just went away) is not an 'error' event, which
    // would end the process: the disconnect that follows ends the worker anyway.
    if (bytes) {
      process.send(Object.assign(envelope, { bytes: true }), ignore);
      process.send(bytes, ignore); // Node writes it as Buffer JSON, which the pool accepts
    } else {
      process.send(envelope, ignore);
    }
  }

  function sendData(head, value) {
    const bytes = asBuffer(value);
    if (bytes) send(head, bytes);
    else send(Object.assign(head, { data: value === undefined ? null : value }));
  }

  // A malformed envelope (exit code 2) or a failed onInit (1): stop, and let the process end.
  function end(code) {
    if (stopped) return;
    stopped = true;
    process.exitCode = code;
    if (process.connected) process.disconnect();
  }

  // True the first time: a task gets one done or fail, and no progress after it.
  function finish(task) {
    if (task.finished) return false;
    task.finished = true;
    live.delete(task.id);
    return true;
  }

  function runTask(id, name, data) {
    const controller = new AbortController();
    const task = { id, finished: false, cancelled: false, controller };
    live.set(id, task);
    const ctx = {
      name,
      id,
      signal: controller.signal,
      get cancelled() { return task.cancelled; },
      progress(update) { if (!task.finished) sendData({ cp: 'prog', id }, update); },
    };
    const handler = every || table.get(name);
    const fail = (thrown) => { if (finish(task)) send({ cp: 'fail', id, error: errorOf(thrown) }); };
    const done = (result) => { if (finish(task)) sendData({ cp: 'done', id }, result); };
    if (typeof handler !== 'function') {
      if (finish(task)) send({ cp: 'fail', id, error: { name: 'UnknownTask', message: `no task named '${name}'` } });
      return;
    }
    let result;
    try {
      result = handler(data, ctx);
    } catch (thrown) {
      fail(thrown);
      return;
    }
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
      Promise.resolve(result).then(done, fail);
    } else {
      done(result);
    }
  }

  function runInit(data) {
    let result;
    try {
      result = options.onInit ? options.onInit(data) : undefined;
    } catch (thrown) {
      initFailed(thrown);
      return;
    }
    const ready = () => {
      if (stopped) return;
      initState = 'ready';
      send({ cp: 'ready' });
      while (held.length > 0 && !stopped) handle(held.shift());
    };
    if (result !== null && typeof result === 'object' && typeof result.then === 'function') {
      initState = 'running';
      Promise.resolve(result).then(ready, initFailed);
    } else {
      ready();
    }
  }

  function initFailed(thrown) {
    const error = errorOf(thrown);
    process.stderr.write(`childproc-pool-worker: onInit threw ${error.name}: ${error.message}\n`);
    end(1);
  }

  function broadcast(data) {
    try {
      if (options.onBroadcast) options.onBroadcast(data);
    } catch (thrown) {
      // Nobody waits for a broadcast's outcome: it is reported here and the worker goes on.
      const error = errorOf(thrown);
      process.stderr.write(`childproc-pool-worker: onBroadcast threw ${error.name}: ${error.message}\n`);
    }
  }

  // One complete envelope (its bytes payload already attached as `data`); false if malformed.
  function handle(e) {
    if (e.cp === 'init') {
      if (initState !== 'waiting') return false;
      runInit(e.data);
      return true;
    }
    if (initState === 'waiting') return false;
    if (initState === 'running') { held.push(e); return true; } // in order, after onInit
    if (e.cp === 'task') {
      if (live.has(e.id)) return false;
      runTask(e.id, e.name === undefined ? '' : e.name, e.data === undefined ? null : e.data);
      return true;
    }
    if (e.cp === 'cancel') {
      const task = live.get(e.id); // a finished task's cancel crossed its result: ignored
      if (task && !task.cancelled) {
        task.cancelled = true;
        task.controller.abort();
      }
      return true;
    }
    if (e.cp === 'bcast') {
      broadcast(e.data === undefined ? null : e.data);
      return true;
    }
    return false;
  }

  const ops = new Set(['init', 'task', 'cancel', 'bcast']);
  const withId = new Set(['task', 'cancel']);

  function wellFormed(m) {
    if (m === null || typeof m !== 'object' || Array.isArray(m) || !ops.has(m.cp)) return false;
    if (withId.has(m.cp) && !(Number.isSafeInteger(m.id) && m.id >= 0)) return false;
    if (m.name !== undefined && typeof m.name !== 'string') return false;
    return true;
  }

  process.on('message', (m) => {
    if (stopped) return;
    if (pendingBytes) {
      const e = pendingBytes;
      pendingBytes = null;
      if (!isBufferJson(m)) { end(2); return; }
      e.data = Buffer.from(m.data);
      if (!handle(e)) end(2);
      return;
    }
    if (!wellFormed(m)) { end(2); return; }
    if (m.bytes === true && m.cp !== 'cancel') {
      pendingBytes = m;
      return;
    }
    if (!handle(m)) end(2);
  });
  // When the pool disconnects (or dies) the worker ends, with process.exitCode (0, or the code
  // set above), even if a task or the script still holds timers: nobody waits for its results.
  // The exit is left to the next turn so that the abort listeners run first.
  process.on('disconnect', () => {
    stopped = true;
    for (const task of live.values()) {
      task.cancelled = true;
      task.controller.abort();
    }
    setImmediate(() => process.exit());
  });
}

module.exports = { serve };
