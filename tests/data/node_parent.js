// A Node parent that drives a C++ worker (the test helper in mode ipc-echo) over Node's own IPC,
// once with fork({execPath}) and once with spawn(..., {stdio: [..., 'ipc']}).
// Usage: node node_parent.js <helper> fork|spawn
const { fork, spawn } = require('child_process');
const [helper, how] = process.argv.slice(2);
const child = how === 'fork'
  ? fork('ipc-echo', [], { execPath: helper })
  : spawn(helper, ['ipc-echo'], { stdio: ['inherit', 'inherit', 'inherit', 'ipc'] });
const sent = [{ hello: 'world' }, 'ünïcödé ✓ 😀', [1, 2, 3], { order: { customer: 'ada', item_prices: [3, 4], express: true } }];
const got = [];
child.on('message', (message) => {
  got.push(message);
  if (got.length === sent.length) {
    console.log(JSON.stringify(got));
    child.disconnect();
  }
});
child.on('disconnect', () => console.log('disconnect'));
child.on('exit', (code, signal) => console.log(`exit ${code} ${signal}`));
for (const m of sent) child.send(m);
