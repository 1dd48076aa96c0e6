// Seed 004, "Process vs Thread Comparison", the row "Creation Cost: Higher / Lower", measured:
// the time to create a child process and wait for its end, next to a thread's.
//
// Process: childproc::spawn of this binary with "exit" (it returns at once), awaited until it
// is reaped; fork: the same with a channel, until its "ready" message arrives. Thread: a
// std::thread that returns, joined. Each is run --count times (default 50) in turn; the median
// is printed. (The numbers are printed, never checked: they depend on the machine and its load.)
#include <childproc/childproc.hpp>

#include <boost/asio/io_context.hpp>
#include <fmt/core.h>

#include <algorithm>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

using clock_type = std::chrono::steady_clock;

template <class F>
double median_us(int count, F create_once) {
  std::vector<double> times;
  for (int i = 0; i < count; ++i) {
    const auto start = clock_type::now();
    create_once();
    times.push_back(std::chrono::duration<double, std::micro>(clock_type::now() - start).count());
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "exit")
    return 0;
  if (argc > 1 && std::string_view(argv[1]) == "ready") {
    boost::asio::io_context io;
    auto parent = childproc::parent_channel(io);
    parent.send("ready");
    io.run();
    return 0;
  }
  int count = 50;
  if (argc > 2 && std::string_view(argv[1]) == "--count")
    count = std::max(1, std::stoi(argv[2]));

  const double spawn_us = median_us(count, [] {
    boost::asio::io_context io;
    childproc::spawn_options options;
    options.stdio = {childproc::stdio::ignore, childproc::stdio::ignore, childproc::stdio::inherit};
    auto child = childproc::spawn(io, childproc::self_exe(), {"exit"}, options);
    io.run();
  });
  const double fork_us = median_us(count, [] {
    boost::asio::io_context io;
    auto child = childproc::fork(io, childproc::self_exe(), {"ready"});
    child.on_message([&](const childproc::message&) { child.disconnect(); });
    io.run();
  });
  const double thread_us = median_us(count, [] { std::thread([] {}).join(); });

  fmt::print("| created, {} times each | median |\n|---|---|\n", count);
  fmt::print("| process: spawn, exit, reap | {:.0f} µs |\n", spawn_us);
  fmt::print("| process: fork with a channel, first message | {:.0f} µs |\n", fork_us);
  fmt::print("| thread: create, join | {:.0f} µs |\n", thread_us);
  fmt::print("a process costs {:.0f}x a thread to create here\n",
             spawn_us / std::max(thread_us, 1.0));
}
