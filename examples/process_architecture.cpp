// Seed 004, "Process Architecture": the text diagram of the main process and two children,
// each with its pid and memory, printed here from the real processes.
//
//   Operating System
//   ├── Process 1 (PID: 1234) - Main Node.js app
//   │   ├── Memory: 50MB
//   │   ├── V8 Engine Instance
//   │   └── Event Loop Thread
//   ├── Process 2 (PID: 1235) - Child process
//   ...
//
// Each child reports its own pid, parent pid and resident memory (/proc/self/statm) over its
// channel. There is no V8 here: each process runs its own copy of this executable, with its own
// event loop (an asio::io_context).
#include "fork_task.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <fmt/core.h>

#include <cstdio>
#include <string_view>
#include <unistd.h>

namespace {

double rss_mb() {
  long pages_total = 0, pages_resident = 0;
  if (FILE* f = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(f, "%ld %ld", &pages_total, &pages_resident) != 2)
      pages_resident = 0;
    std::fclose(f);
  }
  return double(pages_resident) * double(::sysconf(_SC_PAGESIZE)) / (1024 * 1024);
}

void print_process(int number, long pid, std::string_view role, double mb, bool last) {
  const auto* branch = last ? "└── " : "├── ";
  const auto* stem = last ? "    " : "│   ";
  fmt::print("{}Process {} (PID: {}) - {}\n", branch, number, pid, role);
  fmt::print("{}├── Memory: {:.1f}MB\n", stem, mb);
  fmt::print("{}├── Executable: its own copy of process_architecture\n", stem);
  fmt::print("{}└── Event Loop: its own asio::io_context\n", stem);
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "child")
    return fork_task::serve_tasks([](const boost::json::value&) {
      return boost::json::value{{"pid", ::getpid()}, {"ppid", ::getppid()}, {"rss_mb", rss_mb()}};
    });

  boost::asio::io_context io;
  boost::asio::co_spawn(
      io,
      []() -> boost::asio::awaitable<void> {
        using namespace boost::asio::experimental::awaitable_operators;
        // The awaitables are made in a plain function: g++ 12 mishandles temporaries inside a
        // co_await expression.
        auto report = [] { return fork_task::run(childproc::self_exe(), {"child"}, "report"); };
        auto [first, second] = co_await (report() && report());
        fmt::print("Operating System\n");
        print_process(1, ::getpid(), "Main process", rss_mb(), false);
        int number = 2;
        for (const auto* child : {&first, &second}) {
          const auto& info = child->reply.value();
          print_process(number, info.at("pid").to_number<long>(),
                        number == 2 ? "Child process" : "Another child",
                        info.at("rss_mb").to_number<double>(), number == 3);
          ++number;
        }
        const bool ours = first.reply->at("ppid").to_number<long>() == ::getpid() &&
                          second.reply->at("ppid").to_number<long>() == ::getpid();
        fmt::print("3 processes, 3 pids: {}, both children's parent is the main process: {}\n",
                   first.pid != second.pid && first.pid != ::getpid() && second.pid != ::getpid(),
                   ours);
      },
      [](std::exception_ptr e) {
        if (e)
          std::rethrow_exception(e);
      });
  io.run();
}
