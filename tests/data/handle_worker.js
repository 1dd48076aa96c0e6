// A Node worker that takes and gives sockets over its channel (Node's send(message, handle)):
//  {op: 'serve', text}  with a socket: writes "node <pid> <text>" to it and ends it, answers
//                       {served: true}
//  {op: 'connect', port}: connects to 127.0.0.1:port and sends that socket with {op: 'socket'}
//  {op: 'bye'}: disconnects.
const net = require('net');

process.on('message', (message, handle) => {
  if (message.op === 'serve') {
    handle.end(`node ${process.pid} ${message.text}`);
    process.send({ served: handle instanceof net.Socket });
  } else if (message.op === 'connect') {
    const socket = net.connect(message.port, '127.0.0.1', () => {
      process.send({ op: 'socket' }, socket);
    });
  } else if (message.op === 'bye') {
    process.disconnect();
  }
});
