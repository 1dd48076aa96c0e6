// The source document's "proof of separate processes": the child reports its pid, its parent's
// pid and its own resident memory; the parent prints its own.
//
//   console.log('Main Process PID:', process.pid);
//   console.log('Main Memory:', process.memoryUsage().rss);
//   const child = fork('child.js');
//   child.on('message', (msg) => console.log('Child Info:', msg));
//
//   // child.js
//   process.send({ childPID: process.pid, parentPID: process.ppid,
//                  memory: process.memoryUsage().rss });
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>
#include <fmt/core.h>

#include <cstdio>
#include <string_view>
#include <unistd.h>

namespace {

// The resident set size in bytes, as Node's process.memoryUsage().rss.
long long rss_bytes() {
  long long pages_total = 0, pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%lld %lld", &pages_total, &pages_resident) != 2)
      pages_resident = 0;
    std::fclose(f);
  }
  return pages_resident * ::sysconf(_SC_PAGESIZE);
}

int worker() {
  boost::asio::io_context io;
  auto parent = childproc::parent_channel(io);
  parent.send(boost::json::value{
      {"childPID", ::getpid()}, {"parentPID", ::getppid()}, {"memory", rss_bytes()}});
  io.run();
  return 0;
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "child")
    return worker();

  boost::asio::io_context io;
  fmt::print("Main Process PID: {}\n", ::getpid());
  fmt::print("Main Memory: {}\n", rss_bytes());

  auto child = childproc::fork(io, childproc::self_exe(), {"child"});
  child.on_message([&](const childproc::message& msg) {
    const auto& info = msg.json();
    fmt::print("Child Info: {}\n", boost::json::serialize(info));
    fmt::print("separate process: {}, our child: {}\n",
               info.at("childPID").to_number<pid_t>() != ::getpid(),
               info.at("parentPID").to_number<pid_t>() == ::getpid());
    child.disconnect();
  });
  io.run();
}
