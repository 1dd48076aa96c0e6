// An unmodified Node worker: answers every message, with its pid; "exit" makes it disconnect.
process.on('message', (message) => {
  if (message === 'exit') {
    process.disconnect();
    return;
  }
  process.send({ echo: message, pid: process.pid });
});
