// A Node pool worker for the tests: the C++ helper's pool-worker tasks that apply to Node, served
// through share/childproc/childproc-pool-worker.js. With the argument "init-throws" its onInit
// throws "init failed"; with "async-init" it returns a Promise that sets the worker data 100 ms
// later.
'use strict';
const path = require('path');
const { serve } = require(path.join(__dirname, '..', '..', 'share', 'childproc', 'childproc-pool-worker.js'));

let workerData = null;
const broadcasts = [];

serve({
  default: (data) => data,
  sum: ({ a, b }) => a + b,
  pid: () => process.pid,
  throw: (message) => { throw new Error(message); },
  progress: (n, ctx) => {
    for (let i = 0; i < n; ++i) ctx.progress(i);
    return 'done';
  },
  reverse: (bytes) => Buffer.from(bytes).reverse(),
  worker_data: () => workerData,
  broadcasts: () => broadcasts.slice(),
  env: (name) => (name in process.env ? process.env[name] : null),
  // Resolves once the task is cancelled (ctx.signal aborts), after checking ctx.cancelled.
  cancellable: (_, ctx) => new Promise((resolve) => {
    const giveUp = setTimeout(() => resolve('not cancelled'), 30000);
    ctx.signal.addEventListener('abort', () => {
      clearTimeout(giveUp);
      resolve(ctx.cancelled ? 'cancelled' : 'aborted without cancelled');
    });
  }),
  async_sleep: (ms) => new Promise((resolve) => setTimeout(() => resolve(ms), ms)),
}, {
  onInit(data) {
    if (process.argv[2] === 'init-throws') throw new Error('init failed');
    if (process.argv[2] === 'async-init') {
      return new Promise((resolve) => setTimeout(() => { workerData = data; resolve(); }, 100));
    }
    workerData = data;
    return undefined;
  },
  onBroadcast(update) { broadcasts.push(update); },
});
