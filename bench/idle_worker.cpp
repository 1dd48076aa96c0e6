// forkmem's worker_* rows: the idle worker of childproc_bench.cpp as a program of its own, built
// by childproc_add_worker (bench/CMakeLists.txt), as a user builds a worker: says hello at once,
// then idles until the parent disconnects.
#include <childproc/channel.hpp>

#include <boost/asio/io_context.hpp>

int main() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.send("ready");
  io.run();
  return 0;
}
