// An unmodified Node worker for the encoding tests: "lone" is answered with a string holding a
// lone surrogate (what JSON.stringify writes as "\ud800"); a Buffer's JSON shape is answered with
// the bytes it carries, in hex; "exit" disconnects; anything else is echoed as it is.
process.on('message', (message) => {
  if (message === 'exit') {
    process.disconnect();
  } else if (message === 'lone') {
    process.send('a\ud800b');
  } else if (message && message.type === 'Buffer' && Array.isArray(message.data)) {
    process.send({ hex: Buffer.from(message.data).toString('hex') });
  } else {
    process.send(message);
  }
});
