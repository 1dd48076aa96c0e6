// The source document's fork snippet: the parent forks a worker, sends "start", and the worker
// answers with its result and pid (the Express route is left out: the parent prints the reply).
//
//   const child = fork("./longTask.js")
//   child.send("start")
//   child.on("message", ({result, pid}) => res.send({ result, child_pid: pid, main_pid: process.pid
//   }))
//
//   // longTask.js
//   process.on("message", (message) => {
//     if (message == "start") process.send({ result: longComputation(), pid: process.pid })
//   })
//
// The worker is this same binary, started with the argument "child". The loop is 1e8 long
// rather than the snippet's 1e10, so that the example runs in well under a second.
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>

#include <string_view>
#include <unistd.h>

namespace {

long long long_computation() {
  volatile long long sum = 0; // volatile: keep the loop, as the snippet's is real work
  for (long long i = 0; i < 100'000'000; ++i)
    sum = sum + i;
  return sum;
}

int worker() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.on_message([&](const childproc::message& message) {
    if (message.json() == "start")
      parent.send(boost::json::value{{"result", long_computation()}, {"pid", ::getpid()}});
  });
  io.run(); // ends when the parent disconnects
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "child")
    return worker();

  boost::asio::io_context io;
  auto child = childproc::fork(io, childproc::self_exe(), {"child"});
  child.send("start");
  child.on_message([&](const childproc::message& message) {
    const auto& reply = message.json();
    fmt::print("{}\n", boost::json::serialize(boost::json::value{{"result", reply.at("result")},
                                                                 {"child_pid", reply.at("pid")},
                                                                 {"main_pid", ::getpid()}}));
    child.disconnect();
  });
  io.run();
}
