// Node's side of childproc_bench's workers workload (seed 004's tables, measured): 1, 10 and 100
// idle children forked at once with child_process.fork (1 and 10 quick); once every one has sent
// "ready", the time that took and the sum of their RSS and PSS (/proc/<pid>/smaps_rollup); then a
// worker_threads Worker created and run to its exit, Node's "thread: create + join".
// 1000 Node children are not run: at about 40 MB of RSS each they would need 40 GB, more than this
// machine has (docs/bench/README.md). Usage: node bench/workers.js [quick]
'use strict';
const { fork } = require('child_process');
const fs = require('fs');
const { Worker } = require('worker_threads');

if (process.argv[2] === 'idle-worker') {
  process.send('ready');
  process.on('disconnect', () => process.exit(0));
  return;
}

const quick = process.argv[2] === 'quick';

function smaps(pid) {
  let rss = 0;
  let pss = 0;
  for (const line of fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8').split('\n')) {
    const [name, kb] = line.split(/\s+/);
    if (name === 'Rss:') rss = Number(kb);
    if (name === 'Pss:') pss = Number(kb);
  }
  return { rss, pss };
}

function workersMemory(n) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const children = [];
    let ready = 0;
    for (let i = 0; i < n; ++i) {
      const child = fork(__filename, ['idle-worker'], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      child.on('error', reject);
      child.on('message', () => {
        if (++ready < n) return;
        const ms = Number(process.hrtime.bigint() - t0) / 1e6;
        let rss = 0;
        let pss = 0;
        for (const c of children) {
          const m = smaps(c.pid);
          rss += m.rss;
          pss += m.pss;
        }
        console.log(`node workers ready_${n} ${ms.toFixed(3)} ms`);
        console.log(`node workers rss_total_${n} ${(rss / 1024).toFixed(3)} MB`);
        console.log(`node workers pss_total_${n} ${(pss / 1024).toFixed(3)} MB`);
        let exited = 0;
        for (const c of children) {
          c.on('exit', () => { if (++exited === n) resolve(); });
          c.disconnect();
        }
      });
      children.push(child);
    }
  });
}

function threadOnce() {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const w = new Worker('', { eval: true });
    w.on('error', reject);
    w.on('exit', () => resolve(Number(process.hrtime.bigint() - t0) / 1e3));
  });
}

(async () => {
  for (const n of quick ? [1, 10] : [1, 10, 100]) await workersMemory(n);
  const us = [];
  for (let i = 0; i < (quick ? 5 : 50); ++i) us.push(await threadOnce());
  us.sort((a, b) => a - b);
  console.log(`node workers thread_create_join ${us[Math.floor(us.length / 2)].toFixed(3)} us`);
})().catch((e) => { console.error(e.message); process.exit(1); });
