// Node's side of childproc_bench's pipe workload: a.stdout.pipe(b.stdin) from `head -c N
// /dev/zero`, first into a slow reader (the parent's peak RSS growth), then into `cat`
// (throughput). Usage: node bench/pipe.js [quick]
'use strict';
const { spawn } = require('child_process');

const quick = process.argv[2] === 'quick';
// The same slow reader as childproc_bench.cpp's: 64 KiB, then 0.5 ms of sleep.
const slowReader = ['python3', '-c',
  'import sys, time\nr = sys.stdin.buffer.raw\nwhile r.read(65536):\n    time.sleep(0.0005)\n'];

function pipeThrough(reader, size) {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const a = spawn('head', ['-c', String(size), '/dev/zero'], { stdio: ['ignore', 'pipe', 'inherit'] });
    const b = spawn(reader[0], reader.slice(1), { stdio: ['pipe', 'ignore', 'inherit'] });
    let bytes = 0;
    a.stdout.on('data', (chunk) => { bytes += chunk.length; });
    a.stdout.pipe(b.stdin);
    b.on('close', (code) => {
      if (code !== 0 || bytes !== size) reject(new Error(`pipe: code ${code}, ${bytes} bytes`));
      else resolve(Number(process.hrtime.bigint() - t0) / 1e9);
    });
  });
}

(async () => {
  const rss0 = process.resourceUsage().maxRSS; // KiB
  await pipeThrough(slowReader, quick ? 64 * 2 ** 20 : 2 ** 30);
  const growth = (process.resourceUsage().maxRSS - rss0) / 1024;
  console.log(`node pipe slow_rss_growth ${growth.toFixed(3)} MB`);
  const size = quick ? 256 * 2 ** 20 : 2 * 2 ** 30;
  const dt = await pipeThrough(['cat'], size);
  console.log(`node pipe throughput ${(size / dt / 1e9).toFixed(4)} GB/s`);
})().catch((e) => { console.error(e.message); process.exit(1); });
